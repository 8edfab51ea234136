"""Oracle guidance: the analytic denoiser of a known target (SPEC Sec. 9).

For the views being optimised it renders the target mesh under the same camera, light,
background and shading mode, x*, and predicts the optimal noise for a pixel-space
diffusion model whose data is that single image:
    ε̂(x_t) = (x_t - √ᾱ_t x*) / √(1 - ᾱ_t),
with samples z = 2x - 1 (the same [-1, 1] range a VAE sees). SDS then reduces to a
weighted L2 pull towards x*, which makes whole-pipeline reconstruction testable with no
weights while running the real SDS code.
"""
from __future__ import annotations

import torch

from ..geometry.mesh import Mesh, sample_colors
from ..render.mesh_renderer import render_mesh
from ..render.raster import Rasterizer
from ..render.shading import Views
from .base import ddpm_alphas_cumprod


def mesh_material(mesh: Mesh):  # noqa: ANN201 (returns a render Material)
    """Material and per-vertex extras reproducing a mesh's own colours."""
    extras = {}
    if mesh.uv is not None and mesh.texture is not None:
        extras["uv"] = mesh.uv
    elif mesh.colors is not None:
        extras["colors"] = mesh.colors
    return (lambda xyz, ex: sample_colors(mesh, ex.get("uv"), ex.get("colors"))), extras


def render_target(raster: Rasterizer, mesh: Mesh, views: Views, with_mask: bool = False) -> torch.Tensor:
    """[B,H,W,3] in [0,1] (RGBA [B,H,W,4] with_mask, alpha antialiased): the target seen
    through the views (grey if it has no colour)."""
    if mesh.has_color:
        material, extras = mesh_material(mesh)
    else:
        material, extras = None, {}
    with torch.no_grad():
        out = render_mesh(raster, mesh.verts, mesh.faces, views, material, extras)
    return torch.cat([out.image, out.alpha], -1) if with_mask else out.image


class OracleDenoiser:
    def __init__(self, target: Mesh, raster: Rasterizer, num_train_timesteps: int = 1000) -> None:
        self.target, self.raster = target, raster
        self.alphas_cumprod = ddpm_alphas_cumprod(num_train_timesteps)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.permute(0, 3, 1, 2) * 2 - 1

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return ((z + 1) / 2).clamp(0, 1)

    def target_images(self, views: Views) -> torch.Tensor:
        return render_target(self.raster, self.target, views)

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, views: Views) -> torch.Tensor:
        x_star = self.encode(self.target_images(views).to(z_t))
        a = self.alphas_cumprod.to(z_t)[t].reshape(-1, 1, 1, 1)
        return (z_t - a.sqrt() * x_star) / (1 - a).sqrt()
