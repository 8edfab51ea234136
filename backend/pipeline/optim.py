"""Optimisers named in presets: Adam (torch) and Adan (Xie et al. 2022, used by XBind's
phase II), written here because torch has no Adan."""
from __future__ import annotations

from typing import Iterable

import torch


class Adan(torch.optim.Optimizer):
    """Adan with bias correction. betas follow the paper's (β1, β2, β3) = (0.02, 0.08, 0.01)
    in the 1 - β form used by the official code: (0.98, 0.92, 0.99)."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 (torch.optim API)
        for group in self.param_groups:
            b1, b2, b3 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["m"], st["v"], st["n"] = (torch.zeros_like(p) for _ in range(3))
                    st["prev"] = g.clone()
                st["step"] += 1
                k = st["step"]
                diff = g - st["prev"]
                st["m"].mul_(b1).add_(g, alpha=1 - b1)
                st["v"].mul_(b2).add_(diff, alpha=1 - b2)
                st["n"].mul_(b3).addcmul_(g + b2 * diff, g + b2 * diff, value=1 - b3)
                c1, c2, c3 = 1 - b1 ** k, 1 - b2 ** k, 1 - b3 ** k
                denom = (st["n"] / c3).sqrt().add_(group["eps"])
                update = (st["m"] / c1 + b2 * st["v"] / c2) / denom
                p.sub_(update * group["lr"]).div_(1 + group["lr"] * group["weight_decay"])
                st["prev"].copy_(g)


def make_optimizer(name: str, params: Iterable, lr: float) -> torch.optim.Optimizer:
    """On CUDA (and the estimator's fake tensors, which stand for it) Adam runs fused: one
    kernel for every parameter, its step counts on the device, so no host sync a step (the
    default reads each parameter's step count back). The CPU keeps torch's default."""
    from torch._subclasses.fake_tensor import is_fake

    params = list(params)
    if name == "adam":
        fused = any(p.device.type == "cuda" or is_fake(p) for p in params)
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99), eps=1e-15, fused=fused or None)
    if name == "adan":
        return Adan(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}: use adam or adan")
