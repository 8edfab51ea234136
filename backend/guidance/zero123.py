"""Zero-1-to-3 as a Denoiser (XBind Eq. 10): novel-view noise prediction conditioned on the
reference image x_r and the camera relative to the reference view. With the SDS
machinery of guidance/base.py this is the zero123_sds loss.

Conditioning (reference-code conventions, SPEC Sec. 12): the CLIP image embedding of x_r
concatenated with [Δpolar (rad), sin Δazimuth, cos Δazimuth, Δradius] and projected
772 -> 768 into the UNet's cross-attention context; vae.encode(x_r).mode() (unscaled) is
concatenated to the noisy latent on channels (8 in). The unconditional branch zeros both.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from ..models import graphs
from ..models.loaders import Zero123Components
from ..render.camera import relative_pose
from ..render.shading import Views
from ..schema import Ramp, setting
from .base import SDS, Conditioning, Denoiser, Guidance, GuidanceConfig, PhaseSettings, TimestepSchedule, register_loss
from .diffusion import vae_encode


@register_loss("zero123_sds")
@dataclass(frozen=True)
class Zero123SDSConfig(GuidanceConfig):
    roles: ClassVar[frozenset[str]] = frozenset({"zero123"})
    needs_reference: ClassVar[bool] = True
    # Magic123's 3D prior (guochengqian/Magic123 scripts/magic123/run_both_priors.sh:
    # --guidance_scale 100 5, --t_range 0.2 0.6; threestudio's magic123 configs the same): its own
    # timestep window, not the phase's.
    guidance_scale: Ramp = setting((5.0, 5.0), lo=0.0)  # CFG scale, constant or [start, end] over the phase
    timesteps: TimestepSchedule = TimestepSchedule(0.2, 0.6, "random")

    def paper_term(self, phase_cfg: PhaseSettings, cond: Conditioning, seed: int) -> Guidance:
        return SDS(cond.zero123(), self.timesteps, phase_cfg.weighting, 0.0, seed, guidance_scale=self.guidance_scale)

    def oracle_term(self, phase_cfg: PhaseSettings, oracle: Denoiser, seed: int) -> Guidance:
        """The oracle sees the target from any view, as Zero-1-to-3 imagines it."""
        return SDS(oracle, self.timesteps, phase_cfg.weighting, 0.0, seed)


class Zero123Denoiser:
    def __init__(self, comps: Zero123Components, image_encoder: Callable[[torch.Tensor], torch.Tensor],
                 reference: torch.Tensor, ref_elevation: float = 0.0, ref_azimuth: float = 0.0,
                 ref_radius: float = 2.5, *, guidance_scale: float = 1.0) -> None:
        """reference: [H,W,3] in [0,1] (background already removed and composited);
        image_encoder: its CLIP tower ([B,3,H,W] in [0,1] -> [B,D], models/encoders.py)."""
        self.c, self.guidance_scale, self.resolution = comps, guidance_scale, comps.resolution
        self.ref_pose = (ref_elevation, ref_azimuth, ref_radius)
        self.alphas_cumprod = comps.alphas_cumprod
        self.dtype = next(comps.unet.parameters()).dtype
        self.scaling = comps.vae.config.scaling_factor
        with torch.no_grad():
            # contiguous: on the permuted (channels-last) image torch's CPU GroupNorm, in the
            # VAE encoder, loses ~1e-3 relative precision (tests/test_guidance_parity.py)
            x = self._resize(reference[None].permute(0, 3, 1, 2).contiguous().to(comps.device))
            self.image_embed = image_encoder(x)  # [1,D]
            self.ref_latent = comps.vae.encode((x * 2 - 1).to(self.dtype)).latent_dist.mode().float()

    def with_scale(self, guidance_scale: float) -> "Zero123Denoiser":
        """The same denoiser (its reference shared) at another CFG scale."""
        other = copy.copy(self)
        other.guidance_scale = guidance_scale
        return other

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, (self.resolution, self.resolution), mode="bilinear", align_corners=False)

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """[B,H,W,3] renders -> [B,3,256,256], bilinearly (threestudio's zero123 guidances)."""
        return self._resize(images.permute(0, 3, 1, 2).contiguous())  # channels first: see SDDenoiser.model_input

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return vae_encode(self.c.vae, (x * 2 - 1).to(self.dtype), generator).float() * self.scaling

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return ((self.c.vae.decode((z / self.scaling).to(self.dtype)).sample.float() + 1) / 2).clamp(0, 1)

    def context(self, views: Views) -> torch.Tensor:
        """[B,1,768] conditional cross-attention context for the views' cameras."""
        pose = relative_pose(views.cams, *self.ref_pose).to(self.image_embed)
        emb = torch.cat([self.image_embed.expand(pose.shape[0], -1), pose], dim=-1)
        return self.c.cc_projection(emb.to(self.dtype))[:, None, :]

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, views: Views) -> torch.Tensor:
        b = z_t.shape[0]
        ctx = self.context(views)
        ref = self.ref_latent.expand(b, -1, -1, -1)
        latents = torch.cat([torch.cat([z_t, torch.zeros_like(ref)], 1), torch.cat([z_t, ref], 1)])
        ctx_all = torch.cat([torch.zeros_like(ctx), ctx])
        unet = self.c.unet
        eps = graphs.call(unet, lambda z, steps, states: unet(z, steps, encoder_hidden_states=states).sample,
                          (latents.to(self.dtype), torch.cat([t, t]), ctx_all)).float()
        eps_u, eps_c = eps[:b], eps[b:]
        return eps_u + self.guidance_scale * (eps_c - eps_u)
