"""Oracle guidance: analytic denoisers of a known target (SPEC Sec. 9), with the branches
that classifier-free guidance, CSM and VPCSM read, so every 2D loss runs its own code on it.

Samples are pixels, z = 2x - 1 (the range a VAE sees). Each branch is the exact denoiser of
Gaussian data N(m, s² I) around an image m made from the target seen through the views
being optimised (same camera, light, background and shading):
    ε(z_t, t) = √(1-ᾱ_t) (z_t - √ᾱ_t m) / (ᾱ_t s² + 1 - ᾱ_t)        (= E[ε | z_t])
- conditional (the prompt; with VPCSM also the visual prompt): m = x*, the target's render,
  s = sigma_cond (0: the point mass of that one image);
- unconditional: m = the render's mean colour, a flat image without the object,
  s = sigma_uncond (broad: "any image");
- perturbed (PAG, whose perturbation destroys structure): m = x* box-blurred, s = sigma_cond.
predict_noise is classifier-free guidance ε_u + g (ε_c - ε_u) at the loss's scale g
(with_scale). SDS on the point-mass conditional branch alone is a weighted L2 pull to x*.
"""
from __future__ import annotations

import copy

import torch

from ..geometry.mesh import Mesh
from ..render.mesh_material import render_target
from ..render.raster import Rasterizer
from ..render.shading import Views
from .base import ddpm_alphas_cumprod


def gaussian_eps(z_t: torch.Tensor, a: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[ε | z_t] for data N(mean, σ² I) at ᾱ = a ([B,1,1,1] or scalar)."""
    return (1 - a).sqrt() * (z_t - a.sqrt() * mean) / (a * sigma ** 2 + 1 - a)


class OracleDenoiser:
    def __init__(self, target: Mesh, raster: Rasterizer, guidance_scale: float = 1.0, sigma_cond: float = 0.0,
                 sigma_uncond: float = 1.0, blur: int = 5, num_train_timesteps: int = 1000) -> None:
        self.target, self.raster, self.guidance_scale = target, raster, guidance_scale
        self.sigma_cond, self.sigma_uncond, self.blur = sigma_cond, sigma_uncond, blur
        self.alphas_cumprod = ddpm_alphas_cumprod(num_train_timesteps)
        self._seen: tuple[Views, torch.Tensor] | None = None

    def with_scale(self, guidance_scale: float) -> "OracleDenoiser":
        """The same oracle (sharing its target cache) read at another CFG scale."""
        other = copy.copy(self)
        other.guidance_scale = guidance_scale
        return other

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        return images.permute(0, 3, 1, 2)  # the render's own resolution

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x * 2 - 1  # deterministic: no draw

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return ((z + 1) / 2).clamp(0, 1)

    def target_images(self, views: Views) -> torch.Tensor:
        """[B,H,W,3] x* in [0,1]; the last views' render is kept (CSM asks many times a step)."""
        if self._seen is None or self._seen[0] is not views:
            self._seen = (views, render_target(self.raster, self.target, views))
        return self._seen[1]

    def means(self, views: Views) -> dict[str, torch.Tensor]:
        """The branches' data means in z: cond x*, uncond its flat mean colour, perturbed x* blurred."""
        x_star = self.encode(self.model_input(self.target_images(views)))
        flat = x_star.mean(dim=(2, 3), keepdim=True).expand_as(x_star)
        pad = self.blur // 2
        blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x_star, (pad,) * 4, mode="replicate"),
                                                 self.blur, stride=1)
        return {"cond": x_star, "uncond": flat, "perturbed": blurred}

    def _eps(self, z_t: torch.Tensor, t: torch.Tensor, views: Views, branch: str) -> torch.Tensor:
        a = self.alphas_cumprod.to(z_t)[t].reshape(-1, 1, 1, 1)
        sigma = self.sigma_uncond if branch == "uncond" else self.sigma_cond
        return gaussian_eps(z_t, a, self.means(views)[branch].to(z_t), sigma)

    def uncond_noise(self, z_t: torch.Tensor, t: torch.Tensor, views: Views) -> torch.Tensor:
        return self._eps(z_t, t, views, "uncond")

    def branches(self, z_t: torch.Tensor, t: torch.Tensor, views: Views,
                 perturbed: bool = False) -> tuple[torch.Tensor, ...]:
        names = ("uncond", "cond", "perturbed") if perturbed else ("uncond", "cond")
        return tuple(self._eps(z_t, t, views, n) for n in names)

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, views: Views) -> torch.Tensor:
        if self.guidance_scale == 1.0:
            return self._eps(z_t, t, views, "cond")
        eps_u, eps_c = self.branches(z_t, t, views)
        return eps_u + self.guidance_scale * (eps_c - eps_u)
