"""Visual-Prompt Classifier Score Matching (TV-3DG Eq. 15-18).

CSM whose conditional branch also sees the visual prompt v through IP-Adapter attention
fusion (scale τ), plus Perturbed-Attention Guidance on the inverted latent:
    grad_z = w(t) [λ (ε(x, y, v) - ε(x, ∅)) + s (ε(x, y, v) - ε_PSA(x, y, v))],
where ε_PSA replaces the self-attention map by the identity in the PAG layers. The three
branches run as one batch [uncond, cond, perturbed]. DDIM inversion uses the plain
unconditional branch, as in CSM.
"""
from __future__ import annotations

import torch

from ..render.shading import Views
from .csm import CSM, WindowSchedule
from .diffusion import PAG_LAYERS, SDDenoiser, pag


class VPCSM(CSM):
    def __init__(self, denoiser: SDDenoiser, schedule: WindowSchedule | None = None, delta_t: int = 50,
                 scale: float = 7.5, pag_scale: float = 1.0, pag_layers: tuple[str, ...] = PAG_LAYERS,
                 weighting: str = "sds", seed: int = 0) -> None:
        super().__init__(denoiser, schedule, delta_t, scale, weighting, seed)
        self.pag_scale, self.pag_layers = pag_scale, pag_layers

    def delta(self, z_inv: torch.Tensor, t: torch.Tensor, views: Views | None) -> torch.Tensor:
        if self.pag_scale == 0:
            return super().delta(z_inv, t, views)
        with pag(self.denoiser.sd.unet, self.pag_layers):
            eps_u, eps_c, eps_p = self.denoiser.branches(z_inv, t, perturbed=True)
        return self.scale * (eps_c - eps_u) + self.pag_scale * (eps_c - eps_p)
