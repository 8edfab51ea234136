"""Consistency Distillation Sampling (Consistent3D; XBind Eq. 3), used in phase II.

One fixed noise ε* for the whole run. In the variance-exploding view z_t = z + σ_t ε*
with σ_t = √((1-ᾱ_t)/ᾱ_t) (the UNet sees √ᾱ_t z_t). One Euler step of the probability-flow
ODE goes from t1 to t2 < t1: z_t2 = z_t1 + (σ_t2 - σ_t1) ε̂_t1, and the gradient is
λ(t2) (ε̂_t1 - ε̂_t2), the weight taken at the less noisy t2 as in Eq. 3: the model's
consistency between two points of one trajectory. t2 is sqrt-annealed over the phase's
timestep window, from t_max to t_min (SPEC Sec. 12: 300 -> 20 in a refine stage), and
t1 = t2 + U[gap).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..render.camera import Cameras
from ..render.shading import Frame, Views
from ..schema import IntSpan, setting
from .base import (SDS, Denoiser, Guidance, PhaseSettings, TimestepSchedule, UnclipGuidanceConfig, inject_gradient, register_loss,
                   schedule_and_weighting, sds_weight)


@register_loss("cds")
@dataclass(frozen=True)
class CDSConfig(UnclipGuidanceConfig):
    gap: IntSpan = setting((100, 300), lo=0)  # t1 - t2 drawn from [lo, hi)

    def paper_term(self, phase_cfg: PhaseSettings, cond: Any) -> Guidance:
        return CDS(cond.unclip(self.guidance_scale, self.max_resolution), self, *schedule_and_weighting(phase_cfg),
                   cond.seed)

    def oracle_term(self, phase_cfg: PhaseSettings, oracle: Denoiser, seed: int) -> Guidance:
        """CDS has no gradient at all on the one-image oracle (the probability-flow ODE of a
        single image is a straight line, so both ends of a step predict the same noise; on a
        Gaussian it pulls towards noise: tests/test_loss_formulas.py), so the oracle measures
        its phase with SDS over CDS's timestep window."""
        return SDS(oracle, *schedule_and_weighting(phase_cfg), 0.0, seed)


class CDS:
    cameras: Cameras | None = None
    needs_geometry = False

    def __init__(self, denoiser: Denoiser, cfg: CDSConfig, schedule: TimestepSchedule, weighting: str,
                 seed: int) -> None:
        self.denoiser, self.gap, self.schedule, self.weighting = denoiser, cfg.gap, schedule, weighting
        self.generator = torch.Generator().manual_seed(seed)
        self.fixed_noise: torch.Tensor | None = None

    def timesteps(self, step: int, total: int) -> tuple[int, int]:
        """-> (t1, t2), t1 > t2."""
        num_train = self.denoiser.alphas_cumprod.shape[0]
        hi, lo = int(self.schedule.t_max * num_train), int(self.schedule.t_min * num_train)
        frac = math.sqrt(min(step / max(total, 1), 1.0))
        t2 = int(round(hi + (lo - hi) * frac))
        gap = int(torch.randint(self.gap[0], self.gap[1], (1,), generator=self.generator))
        return min(t2 + gap, num_train - 1), t2

    def noise_for(self, z: torch.Tensor) -> torch.Tensor:
        if self.fixed_noise is None or self.fixed_noise.shape != z.shape:
            self.fixed_noise = torch.randn(z.shape, generator=self.generator).to(z)
        return self.fixed_noise

    def __call__(self, frame: Frame, views: Views, step: int, total: int) -> dict[str, torch.Tensor]:
        d = self.denoiser
        z = d.encode(frame.image)
        b = z.shape[0]
        t1_int, t2_int = self.timesteps(step, total)
        ac = d.alphas_cumprod.to(z)
        a1, a2 = ac[t1_int], ac[t2_int]
        sigma1, sigma2 = ((1 - a1) / a1).sqrt(), ((1 - a2) / a2).sqrt()
        t1 = torch.full((b,), t1_int, device=z.device, dtype=torch.long)
        t2 = torch.full((b,), t2_int, device=z.device, dtype=torch.long)
        with torch.no_grad():
            z1 = z.detach() + sigma1 * self.noise_for(z)
            eps1 = d.predict_noise(a1.sqrt() * z1, t1, views)
            z2 = z1 + (sigma2 - sigma1) * eps1
            eps2 = d.predict_noise(a2.sqrt() * z2, t2, views)
        w = sds_weight(d.alphas_cumprod, t2, self.weighting).to(z).reshape(-1, 1, 1, 1)
        return {"cds": inject_gradient(z, w * (eps1 - eps2))}
