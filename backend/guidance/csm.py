"""Classifier Score Matching (TV-3DG Eq. 9, Alg. 1).

x_t comes from deterministic DDIM inversion of the rendered latent with the unconditional
branch, in steps of δt (the first step is the remainder t mod δt, or δt when it divides);
the gradient keeps only the classifier-free-guidance direction:
    grad_z = w(t) λ (ε(x_t^inv, t, y) - ε(x_t^inv, t, ∅)).
Timesteps come from a window that slides from [0.22, 0.98] to [0.02, 0.78] over the first
third of the iterations (the paper's warm-up W), then stays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Protocol

import torch

from ..render.shading import Frame, Views
from ..schema import setting
from .base import (Conditioning, Denoiser, Guidance, GuidanceConfig, OnBatch, PhaseSettings, inject_gradient,
                   register_loss, sds_weight)
from .diffusion import SDDenoiser, sd_resolution

NoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class BranchedDenoiser(Protocol):
    alphas_cumprod: torch.Tensor

    def model_input(self, images: torch.Tensor) -> torch.Tensor: ...
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...
    def uncond_noise(self, z_t: torch.Tensor, t: torch.Tensor, views: Views | None) -> torch.Tensor: ...
    def branches(self, z_t: torch.Tensor, t: torch.Tensor, views: Views | None,
                 perturbed: bool = False) -> tuple[torch.Tensor, ...]:
        """(ε_u, ε_c), or with perturbed (ε_u, ε_c, ε_PAG)."""


def inversion_timesteps(t: int, delta: int) -> list[int]:
    """0 = s_0 < s_1 < ... < s_k = t: first step the remainder t mod δt (δt if it is 0)."""
    first = t % delta or delta
    steps = [0, min(first, t)]
    while steps[-1] < t:
        steps.append(steps[-1] + delta)
    return steps


def ddim_step(x: torch.Tensor, eps: torch.Tensor, a_from: torch.Tensor, a_to: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM move of x from ᾱ_from to ᾱ_to along the predicted noise."""
    x0 = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()
    return a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps


@torch.no_grad()
def ddim_invert(noise_fn: NoiseFn, alphas_cumprod: torch.Tensor, z0: torch.Tensor, t: int, delta: int) -> torch.Tensor:
    """Deterministic noising of clean latents z0 [B,C,h,w] to timestep t."""
    ac = alphas_cumprod.to(z0)
    steps = inversion_timesteps(t, delta)
    x = z0
    for s, s_next in zip(steps[:-1], steps[1:]):
        ts = torch.full((z0.shape[0],), s, device=z0.device, dtype=torch.long)
        x = ddim_step(x, noise_fn(x, ts), ac[s], ac[s_next])
    return x


@dataclass
class WindowSchedule:
    """Timestep window (fractions of T) sliding linearly from `start` to `end` over the
    first `warmup` fraction of iterations; t uniform in the window."""

    start: tuple[float, float] = (0.22, 0.98)
    end: tuple[float, float] = (0.02, 0.78)
    warmup: float = 1 / 3

    def window(self, step: int, total: int) -> tuple[float, float]:
        f = min(step / max(self.warmup * total, 1e-9), 1.0)
        return (self.start[0] + (self.end[0] - self.start[0]) * f, self.start[1] + (self.end[1] - self.start[1]) * f)

    def sample(self, batch: int, step: int, total: int, num_train: int, generator: torch.Generator) -> torch.Tensor:
        lo, hi = self.window(step, total)
        u = torch.rand(batch, generator=generator)
        return (num_train * (lo + (hi - lo) * u)).long().clamp(1, num_train - 1)


@register_loss("csm")
@dataclass(frozen=True)
class CSMConfig(GuidanceConfig):
    roles: ClassVar[frozenset[str]] = frozenset({"sd"})
    scale: float = setting(7.5, lo=0.0)  # λ, the classifier-free guidance scale
    delta_t: int = setting(50, lo=1, hi=999)  # DDIM inversion step
    warmup: float = setting(1 / 3, lo=0.0, hi=1.0)  # fraction of the iterations the timestep window slides over

    def paper_term(self, phase_cfg: PhaseSettings, cond: Conditioning, seed: int) -> Guidance:
        sd = cond.store.get("sd")
        return CSM(SDDenoiser(sd, cond.text, resolution=sd_resolution(sd)), self, phase_cfg.weighting, seed)

    def oracle_term(self, phase_cfg: PhaseSettings, oracle: Denoiser, seed: int) -> Guidance:
        """On the oracle's branches, as TV-3DG defines CSM (CFG is checked on the oracle by
        the formula tests)."""
        return CSM(oracle, self, phase_cfg.weighting, seed)


class CSM(OnBatch):

    def __init__(self, denoiser: BranchedDenoiser, cfg: CSMConfig, weighting: str, seed: int) -> None:
        self.denoiser, self.delta_t, self.scale, self.weighting = denoiser, cfg.delta_t, cfg.scale, weighting
        self.schedule = WindowSchedule(warmup=cfg.warmup)
        self.generator = torch.Generator().manual_seed(seed)

    def timestep(self, step: int, total: int) -> int:
        # One t per step: the inversion walks the whole batch through the same timesteps.
        return int(self.schedule.sample(1, step, total, self.denoiser.alphas_cumprod.shape[0], self.generator)[0])

    def delta(self, z_inv: torch.Tensor, t: torch.Tensor, views: Views | None) -> torch.Tensor:
        """λ (ε_c - ε_u) at the inverted latent; VPCSM overrides this."""
        eps_u, eps_c = self.denoiser.branches(z_inv, t, views)
        return self.scale * (eps_c - eps_u)

    @torch.no_grad()
    def latent_gradient(self, z: torch.Tensor, views: Views | None, step: int, total: int) -> tuple[torch.Tensor, int]:
        """-> (w(t) λ (ε_c - ε_u) at the DDIM-inverted latent [B,C,h,w], t)."""
        d = self.denoiser
        t_int = self.timestep(step, total)
        t = torch.full((z.shape[0],), t_int, device=z.device, dtype=torch.long)
        z_inv = ddim_invert(lambda x, s: d.uncond_noise(x, s, views), d.alphas_cumprod, z, t_int, self.delta_t)
        w = sds_weight(d.alphas_cumprod, t, self.weighting).to(z).reshape(-1, 1, 1, 1)
        return w * self.delta(z_inv, t, views), t_int

    def __call__(self, frame: Frame, views: Views | None, step: int, total: int) -> dict[str, torch.Tensor]:
        d = self.denoiser
        z = d.encode(d.model_input(frame.image), self.generator)
        grad, _ = self.latent_gradient(z.detach(), views, step, total)
        return {"csm": inject_gradient(z, grad)}
