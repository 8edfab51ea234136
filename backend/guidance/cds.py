"""Consistency Distillation Sampling (Consistent3D; XBind Eq. 3), used in phase II, as
Consistent3D's code runs it (sail-sg/Consistent3D, threestudio/models/guidance/
stable_diffusion_guidance.py compute_grad_consistency, with configs/consistency-refine.yaml).

One fixed noise ε* [C,h,w] for the whole run, shared by every view. In the
variance-exploding view z_t = z + σ_t ε* with σ_t = √((1-ᾱ_t)/ᾱ_t) (the UNet sees √ᾱ_t z_t).
One Euler step of the probability-flow ODE goes from t1 to t2 < t1: z_t2 = z_t1 + (σ_t2 - σ_t1)
ε̂_t1, and the gradient is w(t1) (ε̂_t1 - ε̂_t2), clamped elementwise to ±grad_clip: the
model's consistency between two points of one trajectory. t2 is sqrt-annealed over the
phase's timestep window, int(t_max T + (t_min - t_max) T √(step/N)) (300 -> 20 in
Consistent3D's refine stage), kept at most max_t T - gap_lo; each view draws its own gap,
t1 = t2 + U[gap) at most max_t T. XBind's Eq. 3 writes the weight at t2 in x0 form; the
code it cites weights at t1 in ε form, which is followed here (guidance/sources.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..render.shading import Frame, Views
from ..schema import IntSpan, Ramp, ramp_at, setting
from .base import (SDS, Conditioning, Denoiser, Guidance, OnBatch, PhaseSettings, TimestepSchedule,
                   UnclipGuidanceConfig, inject_gradient, register_loss, schedule_and_weighting, sds_weight)


@register_loss("cds")
@dataclass(frozen=True)
class CDSConfig(UnclipGuidanceConfig):
    guidance_scale: Ramp = setting((100.0, 30.0), lo=0.0)  # Consistent3D refine: [0, 100., 30., 3000]
    gap: IntSpan = setting((100, 200), lo=1)  # t1 - t2 drawn per view from [lo, hi)
    max_t: float = setting(0.5, lo=0.0, hi=1.0)  # t1 at most max_t T (Consistent3D's max_sigma_percent)
    grad_clip: Ramp | None = setting((2.0, 8.0), lo=0.0)  # elementwise clamp of the latent gradient; null: none

    def paper_term(self, phase_cfg: PhaseSettings, cond: Conditioning, seed: int) -> Guidance:
        return CDS(cond.unclip(self.max_resolution), self, *schedule_and_weighting(phase_cfg), seed)

    def oracle_term(self, phase_cfg: PhaseSettings, oracle: Denoiser, seed: int) -> Guidance:
        """CDS has no gradient at all on the one-image oracle (the probability-flow ODE of a
        single image is a straight line, so both ends of a step predict the same noise; on a
        Gaussian it pulls towards noise: tests/test_loss_formulas.py), so the oracle measures
        its phase with SDS over CDS's timestep window."""
        return SDS(oracle, *schedule_and_weighting(phase_cfg), 0.0, seed)


class CDS(OnBatch):

    def __init__(self, denoiser: Denoiser, cfg: CDSConfig, schedule: TimestepSchedule, weighting: str,
                 seed: int) -> None:
        self.denoiser, self.cfg, self.schedule, self.weighting = denoiser, cfg, schedule, weighting
        self.generator = torch.Generator().manual_seed(seed)
        self.fixed_noise: torch.Tensor | None = None

    def timesteps(self, batch: int, step: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (t1, t2) [batch] each, t1 > t2; t2 the same for every view, the gap per view."""
        num_train = self.denoiser.alphas_cumprod.shape[0]
        hi, lo = self.schedule.t_max * num_train, self.schedule.t_min * num_train
        top, gap = int(self.cfg.max_t * num_train), self.cfg.gap
        t2 = int(hi + (lo - hi) * math.sqrt(min(step / max(total, 1), 1.0)))
        t2 = min(max(t2, int(lo)), top - gap[0])
        t1 = t2 + torch.randint(gap[0], gap[1], (batch,), generator=self.generator)
        return t1.clamp(max=min(top, num_train - 1)), torch.full((batch,), t2, dtype=torch.long)

    def noise_for(self, z: torch.Tensor) -> torch.Tensor:
        """ε*, drawn on the first call, [1,C,h,w] (broadcast over the views)."""
        if self.fixed_noise is None or self.fixed_noise.shape[1:] != z.shape[1:]:
            self.fixed_noise = torch.randn((1, *z.shape[1:]), generator=self.generator).to(z)
        return self.fixed_noise.to(z)

    def __call__(self, frame: Frame, views: Views, step: int, total: int) -> dict[str, torch.Tensor]:
        d = self.denoiser.with_scale(ramp_at(self.cfg.guidance_scale, step, total))
        z = d.encode(d.model_input(frame.image), self.generator)
        b = z.shape[0]
        t1, t2 = (t.to(z.device) for t in self.timesteps(b, step, total))
        ac = d.alphas_cumprod.to(z)
        a1, a2 = ac[t1].reshape(b, 1, 1, 1), ac[t2].reshape(b, 1, 1, 1)
        sigma1, sigma2 = ((1 - a1) / a1).sqrt(), ((1 - a2) / a2).sqrt()
        with torch.no_grad():
            z1 = z.detach() + sigma1 * self.noise_for(z)
            eps1 = d.predict_noise(a1.sqrt() * z1, t1, views)
            z2 = z1 + (sigma2 - sigma1) * eps1
            eps2 = d.predict_noise(a2.sqrt() * z2, t2, views)
        grad = sds_weight(d.alphas_cumprod, t1, self.weighting).to(z).reshape(b, 1, 1, 1) * (eps1 - eps2)
        if self.cfg.grad_clip is not None:
            limit = ramp_at(self.cfg.grad_clip, step, total)
            grad = grad.clamp(-limit, limit)
        return {"cds": inject_gradient(z, grad)}
