"""Stable Diffusion behind the Denoiser interface of guidance/base.py.

Images [B,H,W,3] in [0,1] are resized to the model resolution and encoded as
z = vae.encode(2x - 1) * scaling; predictions are returned as ε whatever the model's
prediction_type (v-prediction is converted). One UNet forward serves all classifier-free
guidance branches of a step (batched as [uncond, cond] or, with PAG, [uncond, cond,
perturbed]). With an IP-Adapter loaded into the UNet, a visual prompt embedding joins the
text through the adapter's attention (scale τ); the unconditional branch gets zeros.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch

from ..models import graphs
from ..models.loaders import SDComponents
from ..render.shading import Views


def sd_resolution(sd: SDComponents) -> int:
    """The image size a Stable Diffusion model was trained at."""
    return sd.unet.config.sample_size * 2 ** (len(sd.vae.config.block_out_channels) - 1)

PAG_LAYERS = ("mid_block",)  # the PAG paper's choice for SD: the middle block's self-attention


def vae_encode(vae, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:  # noqa: ANN001
    """Latents [B,C,h,w] (unscaled) of images x [B,3,H,W] in [-1,1] drawn from the encoder's
    posterior as diffusers' latent_dist.sample() draws them (mean + std ε), with ε from
    `generator` (a guidance term's own CPU stream, so a resumed run draws what an
    uninterrupted one would; None: the posterior mean). One view at a time: with the
    encoder's block checkpointing on (ModelStore), backward then holds one view's block at a
    time instead of every view's whole encoder graph (13 GB for four 768² views). All views
    are one CUDA graph (models/graphs.py); ε enters it as an input."""
    cfg = vae.config
    f = 2 ** (len(cfg.block_out_channels) - 1)
    shape = (x.shape[0], cfg.latent_channels, x.shape[2] // f, x.shape[3] // f)
    eps = (torch.randn(shape, generator=generator) if generator is not None else torch.zeros(shape)).to(x)

    def encode(images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        dists = [vae.encode(view).latent_dist for view in images.split(1)]
        return torch.cat([d.mean + d.std * e for d, e in zip(dists, noise.split(1))])

    return graphs.call(vae, encode, (x, eps))


def encode_prompt(sd: SDComponents, texts: list[str]) -> torch.Tensor:
    """-> [N,77,D] CLIP text hidden states."""
    tok = sd.tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    device = next(sd.text_encoder.parameters()).device
    with torch.no_grad():
        return sd.text_encoder(tok.input_ids.to(device))[0]


class SDDenoiser:
    def __init__(self, sd: SDComponents, prompt: str, negative: str = "", guidance_scale: float = 7.5,
                 resolution: int = 512, visual_prompt: torch.Tensor | None = None, ip_scale: float = 0.5,
                 image_embeds: torch.Tensor | None = None, pag_layers: tuple[str, ...] = PAG_LAYERS) -> None:
        """visual_prompt: [1,D] IP-Adapter image embedding (needs the adapter loaded in sd.unet).
        image_embeds: [1,D] Stable unCLIP's conditioning at the scale it was trained on (raw
        OpenCLIP ViT-H image embeddings: C_m's unclip form), required by unCLIP models."""
        self.sd, self.guidance_scale, self.resolution = sd, guidance_scale, resolution
        self.visual, self.ip_scale, self.pag_layers = visual_prompt, ip_scale, pag_layers
        self.class_cond = self.class_uncond = None
        if sd.image_normalizer is not None:
            if image_embeds is None:
                raise ValueError("Stable unCLIP needs image_embeds (the modality embedding)")
            self.class_cond = unclip_class_labels(sd, image_embeds)
            # The whole label vector zero, noise-level part included: unCLIP's trained null
            # (Stability-AI/stablediffusion scripts/streamlit/stableunclip.py: adm_uc =
            # torch.zeros_like(adm_cond); diffusers StableUnCLIPImg2ImgPipeline._encode_image:
            # torch.zeros_like of the noised embedding with its level embedding appended).
            self.class_uncond = torch.zeros_like(self.class_cond)
        if visual_prompt is not None and getattr(sd.unet, "encoder_hid_proj", None) is None:
            raise ValueError("a visual prompt needs the IP-Adapter loaded into the UNet (ModelStore.ip_adapter)")
        self.alphas_cumprod = sd.alphas_cumprod
        embeds = encode_prompt(sd, [negative, prompt])
        self.uncond, self.cond = embeds[:1], embeds[1:]
        self.scaling = sd.vae.config.scaling_factor
        self.dtype = next(sd.unet.parameters()).dtype

    def with_scale(self, guidance_scale: float) -> "SDDenoiser":
        """The same denoiser (its prompts and labels shared) at another CFG scale."""
        other = copy.copy(self)
        other.guidance_scale = guidance_scale
        return other

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """[B,H,W,3] renders -> [B,3,R,R] at the model's resolution, bilinearly (threestudio's
        guidances: F.interpolate(rgb, (512, 512), mode="bilinear", align_corners=False)); laid
        out channels first (torch's CPU GroupNorm is less precise on a channels-last view)."""
        x = images.permute(0, 3, 1, 2).contiguous()
        if tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            x = torch.nn.functional.interpolate(x, (self.resolution, self.resolution), mode="bilinear",
                                                align_corners=False)
        return x

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B,3,R,R] in [0,1] -> latents [B,4,R/8,R/8] as the UNet sees them (times the VAE's scaling)."""
        z = vae_encode(self.sd.vae, (x * 2 - 1).to(self.dtype), generator)
        return z.float() * self.scaling

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """[B,4,h,w] -> [B,3,H,W] in [0,1], one view at a time: the VAE decoder's activations
        at 768² are ~0.85 GB a view."""
        x = torch.cat([self.sd.vae.decode(view).sample for view in (z / self.scaling).to(self.dtype).split(1)])
        return ((x.float() + 1) / 2).clamp(0, 1)

    def _eps(self, z_t: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, visual: list[bool],
             perturbed: bool = False) -> torch.Tensor:
        """z_t [N,C,h,w] made of len(visual) equal branches; visual[i]: the visual prompt is
        on in branch i (zeros otherwise). embeds: [N,77,D] text states. perturbed: PAG's
        identity self-attention on the last branch (see pag())."""
        unet = self.sd.unet
        args = [z_t.to(self.dtype), t, embeds.to(self.dtype)]
        b = z_t.shape[0] // len(visual)
        ip_scale = None
        if self.class_cond is not None:
            labels = torch.cat([(self.class_cond if on else self.class_uncond).expand(b, -1) for on in visual])
            args.append(labels.to(z_t.device, self.dtype))
        if getattr(unet, "encoder_hid_proj", None) is not None:
            # The UNet is shared: denoisers without a visual prompt run the adapter at scale 0
            # (exactly plain SD), so the scale is set on every call.
            ip_scale = self.ip_scale if self.visual is not None else 0.0
            set_ip_scale(unet, ip_scale)
            v = self.visual if self.visual is not None else torch.zeros(1, _ip_embed_dim(unet), device=z_t.device)
            v = v.to(self.dtype)
            rows = [(v if on else torch.zeros_like(v)).expand(b, -1) for on in visual]
            args.append(torch.cat(rows)[:, None, :])
        labelled = self.class_cond is not None

        def eps(z: torch.Tensor, steps: torch.Tensor, states: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
            labels = more[0] if labelled else None
            extra = {"image_embeds": [more[-1]]} if ip_scale is not None else None
            return unet(z, steps, encoder_hidden_states=states, class_labels=labels, added_cond_kwargs=extra).sample

        # A graph bakes in the adapter's scale and PAG's processors: both are in its key.
        with pag(unet, self.pag_layers) if perturbed else nullcontext():
            out = graphs.call(unet, eps, args, key=(ip_scale, perturbed and self.pag_layers)).float()
        if self.sd.prediction_type == "v_prediction":
            a = self.alphas_cumprod.to(z_t)[t].reshape(-1, 1, 1, 1)
            out = a.sqrt() * out + (1 - a).sqrt() * z_t
        return out

    def branches(self, z_t: torch.Tensor, t: torch.Tensor, views: Views | None = None,
                 perturbed: bool = False) -> tuple[torch.Tensor, ...]:
        """(ε_uncond, ε_cond[, ε_perturbed]) [B,C,h,w] each, from one batched forward. The
        perturbed branch is the conditional one with self-attention in `pag_layers`
        replaced by the identity map (PAG, see pag()). Text-only: views are not read."""
        b = z_t.shape[0]
        n = 3 if perturbed else 2
        embeds = torch.cat([self.uncond.expand(b, -1, -1)] + [self.cond.expand(b, -1, -1)] * (n - 1))
        eps = self._eps(z_t.repeat(n, 1, 1, 1), t.repeat(n), embeds, [False] + [True] * (n - 1), perturbed)
        return tuple(eps.chunk(n))

    def uncond_noise(self, z_t: torch.Tensor, t: torch.Tensor, views: Views | None = None) -> torch.Tensor:
        return self._eps(z_t, t, self.uncond.expand(z_t.shape[0], -1, -1), [False])

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, views: Views | None) -> torch.Tensor:
        if self.guidance_scale == 1.0:
            return self._eps(z_t, t, self.cond.expand(z_t.shape[0], -1, -1), [True])
        eps_u, eps_c = self.branches(z_t, t)
        return eps_u + self.guidance_scale * (eps_c - eps_u)


@torch.no_grad()
def unclip_class_labels(sd: SDComponents, image_embeds: torch.Tensor, noise_level: int = 0) -> torch.Tensor:
    """Stable unCLIP's class labels: the image embedding normalised, noised to noise_level
    (deterministically: zero noise) and unnormalised, then the sinusoidal embedding of the
    noise level appended -> [1, 2D]. The same computation as the diffusers pipeline's
    noise_image_embeddings with noise = 0."""
    from diffusers.models.embeddings import get_timestep_embedding

    e = image_embeds.float().to(next(sd.image_normalizer.parameters()).device)
    level = torch.full((e.shape[0],), noise_level, device=e.device, dtype=torch.long)
    scaled = sd.image_normalizer.scale(e.to(sd.image_normalizer.mean.dtype))
    noised = sd.image_noising_scheduler.add_noise(scaled, torch.zeros_like(scaled), level)
    e = sd.image_normalizer.unscale(noised).float()
    level_emb = get_timestep_embedding(level, e.shape[-1], flip_sin_to_cos=True, downscale_freq_shift=0)
    return torch.cat([e, level_emb.to(e)], dim=1)


def _ip_embed_dim(unet) -> int:  # noqa: ANN001
    return next(m for m in unet.encoder_hid_proj.modules() if isinstance(m, torch.nn.Linear)).in_features


def set_ip_scale(unet, scale: float) -> None:  # noqa: ANN001 (diffusers UNet)
    """IP-Adapter attention fusion weight τ: F = Attn(Q,K,V) + τ Attn(Q,K',V')."""
    for proc in unet.attn_processors.values():
        if hasattr(proc, "scale") and isinstance(proc.scale, list):
            proc.scale = [scale] * len(proc.scale)


@contextmanager
def pag(unet, layers: tuple[str, ...] = PAG_LAYERS) -> Iterator[None]:  # noqa: ANN001
    """Within the block, self-attention in `layers` runs PAG's identity-map perturbation on
    the third chunk of a [uncond, cond, perturbed] batch."""
    from diffusers.models.attention_processor import PAGCFGIdentitySelfAttnProcessor2_0

    saved = dict(unet.attn_processors)
    procs = {name: (PAGCFGIdentitySelfAttnProcessor2_0() if name.endswith("attn1.processor")
                    and name.startswith(layers) else proc) for name, proc in saved.items()}
    unet.set_attn_processor(procs)
    try:
        yield
    finally:
        unet.set_attn_processor(saved)
