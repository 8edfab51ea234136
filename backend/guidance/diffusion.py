"""Stable Diffusion behind the Denoiser interface of guidance/base.py.

Images [B,H,W,3] in [0,1] are resized to the model resolution and encoded as
z = vae.encode(2x - 1) * scaling; predictions are returned as ε whatever the model's
prediction_type (v-prediction is converted). One UNet forward serves all classifier-free
guidance branches of a step (batched as [uncond, cond]).
"""
from __future__ import annotations

import torch

from ..models.registry import SDComponents
from ..render.shading import Views


def encode_prompt(sd: SDComponents, texts: list[str]) -> torch.Tensor:
    """-> [N,77,D] CLIP text hidden states."""
    tok = sd.tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    device = next(sd.text_encoder.parameters()).device
    with torch.no_grad():
        return sd.text_encoder(tok.input_ids.to(device))[0]


class SDDenoiser:
    def __init__(self, sd: SDComponents, prompt: str, negative: str = "", guidance_scale: float = 7.5,
                 resolution: int = 512) -> None:
        self.sd, self.guidance_scale, self.resolution = sd, guidance_scale, resolution
        self.alphas_cumprod = sd.alphas_cumprod
        embeds = encode_prompt(sd, [negative, prompt])
        self.uncond, self.cond = embeds[:1], embeds[1:]
        self.scaling = sd.vae.config.scaling_factor
        self.dtype = next(sd.unet.parameters()).dtype

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2)
        if x.shape[-1] != self.resolution:
            x = torch.nn.functional.interpolate(x, (self.resolution, self.resolution), mode="bilinear",
                                                align_corners=False)
        z = self.sd.vae.encode((x * 2 - 1).to(self.dtype)).latent_dist.sample()
        return z.float() * self.scaling

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.sd.vae.decode((z / self.scaling).to(self.dtype)).sample.float()
        return ((x + 1) / 2).clamp(0, 1)

    def _eps(self, z_t: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        out = self.sd.unet(z_t.to(self.dtype), t, encoder_hidden_states=embeds.to(self.dtype)).sample.float()
        if self.sd.prediction_type == "v_prediction":
            a = self.alphas_cumprod.to(z_t)[t].reshape(-1, 1, 1, 1)
            out = a.sqrt() * out + (1 - a).sqrt() * z_t
        return out

    def branches(self, z_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε_uncond, ε_cond), both [B,C,h,w], from one batched forward."""
        b = z_t.shape[0]
        embeds = torch.cat([self.uncond.expand(b, -1, -1), self.cond.expand(b, -1, -1)])
        eps = self._eps(torch.cat([z_t, z_t]), torch.cat([t, t]), embeds)
        return eps[:b], eps[b:]

    def uncond_noise(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._eps(z_t, t, self.uncond.expand(z_t.shape[0], -1, -1))

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, views: Views | None) -> torch.Tensor:
        if self.guidance_scale == 1.0:
            return self._eps(z_t, t, self.cond.expand(z_t.shape[0], -1, -1))
        eps_u, eps_c = self.branches(z_t, t)
        return eps_u + self.guidance_scale * (eps_c - eps_u)
