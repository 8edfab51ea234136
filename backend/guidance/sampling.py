"""Plain DDIM sampling with a Denoiser (CFG included in its predict_noise): used to make the
reference view from C_m with unCLIP and the self-guidance image from the text with SD."""
from __future__ import annotations

import torch

from .csm import ddim_step


@torch.no_grad()
def ddim_generate(denoiser, latent_shape: tuple[int, ...], steps: int = 30,  # noqa: ANN001 (a Denoiser)
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """-> image [1,H,W,3] in [0,1] decoded from latents of latent_shape [1,C,h,w]."""
    ac = denoiser.alphas_cumprod
    ts = torch.linspace(ac.shape[0] - 1, 0, steps + 1).round().long()
    device = denoiser.sd.unet.device if hasattr(denoiser, "sd") else ac.device
    x = torch.randn(latent_shape, generator=generator).to(device)
    for t, t_next in zip(ts[:-1], ts[1:]):
        eps = denoiser.predict_noise(x, t.reshape(1).to(device), None)
        x = ddim_step(x, eps, ac[t].to(x), ac[t_next].to(x))
    return denoiser.decode(x).permute(0, 2, 3, 1)
