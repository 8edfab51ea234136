"""Visual-Prompt Classifier Score Matching (TV-3DG Eq. 15-18).

CSM whose conditional branch also sees the visual prompt v through IP-Adapter attention
fusion (scale τ), plus Perturbed-Attention Guidance on the inverted latent:
    grad_z = w(t) [λ (ε(x, y, v) - ε(x, ∅)) + s (ε(x, y, v) - ε_PSA(x, y, v))],
where ε_PSA replaces the self-attention map by the identity in the PAG layers. The three
branches run as one batch [uncond, cond, perturbed]. DDIM inversion uses the plain
unconditional branch, as in CSM. In the texture phase it sees the four fixed views
(front, right, back, left) every step, as SGC does, when `fixed_views` is on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..render.camera import Cameras
from ..render.shading import Background, Views, fixed_views
from ..schema import setting
from .base import Conditioning, Denoiser, Guidance, PhaseSettings, four_views, register_loss
from .csm import CSM, BranchedDenoiser, CSMConfig
from .diffusion import SDDenoiser, sd_resolution


@register_loss("vpcsm")
@dataclass(frozen=True)
class VPCSMConfig(CSMConfig):
    roles: ClassVar[frozenset[str]] = frozenset({"sd", "ip_adapter"})
    ip_scale: float = setting(0.5, lo=0.0)  # τ, IP-Adapter attention fusion
    pag_scale: float = setting(1.0, lo=0.0)  # s
    fixed_views: bool = True  # front/right/back/left each step instead of the sampled batch

    def paper_term(self, phase_cfg: PhaseSettings, cond: Conditioning, seed: int) -> Guidance:
        sd = cond.store.get("sd")
        den = SDDenoiser(sd, cond.text, resolution=sd_resolution(sd), visual_prompt=cond.visual_prompt(sd),
                         ip_scale=self.ip_scale)
        return VPCSM(den, self, phase_cfg.weighting, seed,
                     four_views(phase_cfg) if self.fixed_views else None)

    def oracle_term(self, phase_cfg: PhaseSettings, oracle: Denoiser, seed: int) -> Guidance:
        return VPCSM(oracle, self, phase_cfg.weighting, seed,
                     four_views(phase_cfg) if self.fixed_views else None)


class VPCSM(CSM):
    def __init__(self, denoiser: BranchedDenoiser, cfg: VPCSMConfig, weighting: str, seed: int,
                 cameras: Cameras | None = None) -> None:
        """denoiser: its conditional branch sees the text and the visual prompt; cameras: the
        fixed views it renders (None: the phase's batch)."""
        super().__init__(denoiser, cfg, weighting, seed)
        self.pag_scale, self.cameras = cfg.pag_scale, cameras

    def views(self, shading: str, background: Background) -> Views | None:
        return None if self.cameras is None else fixed_views(self.cameras, shading, background)

    def delta(self, z_inv: torch.Tensor, t: torch.Tensor, views: Views | None) -> torch.Tensor:
        if self.pag_scale == 0:
            return super().delta(z_inv, t, views)
        eps_u, eps_c, eps_p = self.denoiser.branches(z_inv, t, views, perturbed=True)
        return self.scale * (eps_c - eps_u) + self.pag_scale * (eps_c - eps_p)
