"""Consistency Distillation Sampling (Consistent3D; XBind Eq. 3), used in phase II.

One fixed noise ε* for the whole run. In the variance-exploding view z_t = z + σ_t ε*
with σ_t = √((1-ᾱ_t)/ᾱ_t) (the UNet sees √ᾱ_t z_t). One Euler step of the probability-flow
ODE goes from t to t' < t: z_t' = z_t + (σ_t' - σ_t) ε̂_t, and the gradient is
w(t) (ε̂_t - ε̂_t'): the model's consistency between the two points of one trajectory.
t' is sqrt-annealed from t_start to t_end and t = t' + U[gap_min, gap_max).
"""
from __future__ import annotations

import math

import torch

from ..render.shading import Views
from .base import Denoiser, inject_gradient, sds_weight


class CDS:
    def __init__(self, denoiser: Denoiser, t_start: int = 700, t_end: int = 100, gap: tuple[int, int] = (100, 300),
                 weighting: str = "sds", seed: int = 0) -> None:
        self.denoiser, self.t_start, self.t_end, self.gap, self.weighting = denoiser, t_start, t_end, gap, weighting
        self.generator = torch.Generator().manual_seed(seed)
        self.fixed_noise: torch.Tensor | None = None

    def timesteps(self, step: int, total: int) -> tuple[int, int]:
        frac = math.sqrt(min(step / max(total, 1), 1.0))
        t_prev = int(round(self.t_start + (self.t_end - self.t_start) * frac))
        gap = int(torch.randint(self.gap[0], self.gap[1], (1,), generator=self.generator))
        t = min(t_prev + gap, self.denoiser.alphas_cumprod.shape[0] - 1)
        return t, t_prev

    def noise_for(self, z: torch.Tensor) -> torch.Tensor:
        if self.fixed_noise is None or self.fixed_noise.shape != z.shape:
            self.fixed_noise = torch.randn(z.shape, generator=self.generator).to(z)
        return self.fixed_noise

    def __call__(self, images: torch.Tensor, views: Views, step: int, total: int) -> dict[str, torch.Tensor]:
        d = self.denoiser
        z = d.encode(images)
        b = z.shape[0]
        t_int, tp_int = self.timesteps(step, total)
        ac = d.alphas_cumprod.to(z)
        a_t, a_p = ac[t_int], ac[tp_int]
        sigma_t, sigma_p = ((1 - a_t) / a_t).sqrt(), ((1 - a_p) / a_p).sqrt()
        t = torch.full((b,), t_int, device=z.device, dtype=torch.long)
        tp = torch.full((b,), tp_int, device=z.device, dtype=torch.long)
        with torch.no_grad():
            z_t = z.detach() + sigma_t * self.noise_for(z)
            eps_t = d.predict_noise(a_t.sqrt() * z_t, t, views)
            z_p = z_t + (sigma_p - sigma_t) * eps_t
            eps_p = d.predict_noise(a_p.sqrt() * z_p, tp, views)
        w = sds_weight(d.alphas_cumprod, t, self.weighting).to(z).reshape(-1, 1, 1, 1)
        return {"cds": inject_gradient(z, w * (eps_t - eps_p))}
