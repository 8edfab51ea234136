"""Plain DDIM sampling with a Denoiser (CFG included in its predict_noise): used to make the
reference view from C_m with unCLIP, the self-guidance image from the text with SD, and
SGC's multi-view images with Zero-1-to-3 (whose noise prediction takes the target view)."""
from __future__ import annotations

import torch

from ..render.shading import Views
from .base import Denoiser
from .csm import ddim_step


@torch.no_grad()
def ddim_generate(denoiser: Denoiser, latent_shape: tuple[int, ...], device: torch.device, steps: int = 30,
                  generator: torch.Generator | None = None, views: Views | None = None) -> torch.Tensor:
    """-> images [B,H,W,3] in [0,1] decoded from latents of latent_shape [B,C,h,w], drawn on
    the CPU generator and moved to the denoiser's device; `views` (B of them) for
    view-conditioned denoisers. Timesteps T-1 -> 0 in `steps` even steps."""
    ac = denoiser.alphas_cumprod
    ts = torch.linspace(ac.shape[0] - 1, 0, steps + 1).round().long()
    x = torch.randn(latent_shape, generator=generator).to(device)
    for t, t_next in zip(ts[:-1], ts[1:]):
        eps = denoiser.predict_noise(x, t.reshape(1).to(device).expand(x.shape[0]), views)
        x = ddim_step(x, eps, ac[t].to(x), ac[t_next].to(x))
    return denoiser.decode(x).permute(0, 2, 3, 1)
