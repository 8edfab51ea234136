"""A mesh's own colours as a render material, and the mesh rendered through a batch of
views: the oracle's targets, previews of a result, the identity views of stylize / edit."""
from __future__ import annotations

from typing import Callable

import torch

from ..geometry.mesh import Mesh, sample_colors, uv_lookup
from .mesh_renderer import render_mesh
from .raster import Rasterizer
from .shading import Views


def mesh_material(mesh: Mesh) -> tuple[Callable[[torch.Tensor, dict], torch.Tensor], dict]:
    """(material, per-vertex extras) reproducing a mesh's own colours: its texture through
    its UVs, else its vertex colours; with roughness and metallic maps a PBR material
    ([N,5], mesh_renderer.Material)."""
    extras = {}
    if mesh.uv is not None and mesh.texture is not None:
        extras["uv"] = mesh.uv
    elif mesh.colors is not None:
        extras["colors"] = mesh.colors

    def material(xyz: torch.Tensor, ex: dict) -> torch.Tensor:
        albedo = sample_colors(mesh, ex.get("uv"), ex.get("colors"))
        if mesh.roughness_metallic is None or "uv" not in ex:
            return albedo
        return torch.cat([albedo, uv_lookup(mesh.roughness_metallic[None], ex["uv"].reshape(1, -1, 1, 2))
                          .reshape(-1, 2)], -1)

    return material, extras


def render_target(raster: Rasterizer, mesh: Mesh, views: Views, with_mask: bool = False) -> torch.Tensor:
    """[B,H,W,3] in [0,1] (RGBA [B,H,W,4] with_mask, alpha antialiased): the mesh seen
    through the views (grey if it has no colour)."""
    if mesh.has_color:
        material, extras = mesh_material(mesh)
    else:
        material, extras = None, {}
    with torch.no_grad():
        out = render_mesh(raster, mesh.verts, mesh.faces, views, material, extras)
    return torch.cat([out.image, out.alpha], -1) if with_mask else out.image
