"""Baking into a mesh's UV layout: rasterise the mesh in UV space, evaluate something at
each covered texel's attributes, grow the result across chart borders."""
from __future__ import annotations

from typing import Callable

import torch

from ..render.raster import Rasterizer


def uv_gbuffer(raster: Rasterizer, attrs: torch.Tensor, faces: torch.Tensor, uv: torch.Tensor,
               size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-vertex attrs [V,C] interpolated at every texel of a size x size texture ->
    ([size,size,C], covered [size,size] bool). UV space is clip space: u -> x, v (down) ->
    -y, so the image's top row is v = 0 (glTF)."""
    clip = torch.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2, torch.zeros_like(uv[:, 0]), torch.ones_like(uv[:, 0])], -1)
    rast = raster.rasterize(clip[None], faces.int(), (size, size))
    return raster.interpolate(attrs[None], rast, faces.int())[0], rast[0, ..., 3] > 0


def dilate(image: torch.Tensor, filled: torch.Tensor, iterations: int) -> torch.Tensor:
    """Grow filled texels into empty ones (mean of filled 3x3 neighbours) so bilinear
    lookups and mip-maps at chart borders never read the empty background."""
    img = image.permute(2, 0, 1)[None]
    m = filled[None, None].float()
    kernel = torch.ones(1, 1, 3, 3)
    for _ in range(iterations):
        if bool(m.min() > 0):
            break
        num = torch.nn.functional.conv2d(img * m, kernel.expand(img.shape[1], 1, 3, 3), padding=1, groups=img.shape[1])
        den = torch.nn.functional.conv2d(m, kernel, padding=1)
        grow = (den > 0) & (m == 0)
        img = torch.where(grow, num / den.clamp(min=1), img)
        m = torch.where(grow, torch.ones_like(m), m)
    return img[0].permute(1, 2, 0)


def bake(raster: Rasterizer, verts: torch.Tensor, faces: torch.Tensor, uv: torch.Tensor,
         material_fn: Callable[[torch.Tensor], torch.Tensor], size: int, dilation: int = 16) -> torch.Tensor:
    """[size,size,C] in [0,1]: each texel gets material_fn of its surface point ([N,3] -> [N,C]:
    albedo, or a PBR field's albedo, roughness, metallic)."""
    xyz, filled = uv_gbuffer(raster, verts, faces, uv, size)
    with torch.no_grad():
        channels = material_fn(verts[:1]).shape[-1]
        tex = torch.zeros(size, size, channels)
        if filled.any():
            tex[filled] = torch.cat([material_fn(p).float().cpu() for p in xyz[filled].split(1 << 16)])
    return dilate(tex, filled.cpu(), dilation)
