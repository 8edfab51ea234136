"""Tangent-space normal maps: the dense surface's detail kept on the decimated export.

Tangents follow the glTF convention importers use (MikkTSpace's frame): T along +u, the
bitangent B = w (N x T) along -v of glTF's top-left UV origin (+v of the flipped, OpenGL
UVs MikkTSpace sees), per vertex the UV-derivative tangents of its triangles summed and
orthogonalised against the vertex normal. Map texels hold (n·T, n·B, n·N) * 0.5 + 0.5,
glTF's +X right, +Y up, +Z out. MikkTSpace also splits and weights by corner angle; on the
smooth, seam-split meshes exported here the frames agree to a few degrees.
"""
from __future__ import annotations

import numpy as np
import torch

from ..geometry.mesh import vertex_normals
from ..render.raster import Rasterizer
from .bake import dilate, uv_gbuffer


def vertex_tangents(verts: torch.Tensor, faces: torch.Tensor, uv: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """[V,4]: unit tangent xyz (orthogonal to the vertex normal) and handedness w = ±1."""
    p0, p1, p2 = (verts[faces[:, i]] for i in range(3))
    flipped = torch.stack([uv[:, 0], 1 - uv[:, 1]], -1)  # OpenGL v: the frame MikkTSpace computes
    t0, t1, t2 = (flipped[faces[:, i]] for i in range(3))
    e1, e2, d1, d2 = p1 - p0, p2 - p0, t1 - t0, t2 - t0
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    r = torch.where(det.abs() > 1e-12, 1 / det, torch.zeros_like(det))[:, None]
    t = (e1 * d2[:, 1:] - e2 * d1[:, 1:]) * r
    b = (e2 * d1[:, :1] - e1 * d2[:, :1]) * r
    tan = torch.zeros_like(verts).index_add(0, faces.reshape(-1), t.repeat_interleave(3, 0))
    bit = torch.zeros_like(verts).index_add(0, faces.reshape(-1), b.repeat_interleave(3, 0))
    tan = tan - normals * (normals * tan).sum(-1, keepdim=True)
    # a vertex whose triangles have degenerate UVs: any tangent orthogonal to N
    fallback = torch.linalg.cross(normals, torch.tensor([0.0, 1.0, 0.0]).expand_as(normals))
    fallback = torch.where(fallback.norm(dim=-1, keepdim=True) > 1e-3, fallback,
                           torch.linalg.cross(normals, torch.tensor([1.0, 0.0, 0.0]).expand_as(normals)))
    tan = torch.where(tan.norm(dim=-1, keepdim=True) > 1e-9, tan, fallback)
    tan = torch.nn.functional.normalize(tan, dim=-1)
    w = torch.where((torch.linalg.cross(normals, tan) * bit).sum(-1) < 0, -1.0, 1.0)
    return torch.cat([tan, w[:, None]], -1)


def _frame(normal: torch.Tensor, tangent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, B) of an interpolated frame: T re-orthogonalised against N, B = w (N x T)."""
    t = torch.nn.functional.normalize(tangent[..., :3] - normal * (normal * tangent[..., :3]).sum(-1, keepdim=True),
                                      dim=-1)
    return t, tangent[..., 3:] * torch.linalg.cross(normal, t)


def to_tangent_space(n: torch.Tensor, normal: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
    """World normals n [...,3] in the frame (normal [...,3], tangent [...,4]) -> [...,3] unit."""
    t, b = _frame(normal, tangent)
    local = torch.stack([(n * t).sum(-1), (n * b).sum(-1), (n * normal).sum(-1)], -1)
    return torch.nn.functional.normalize(local, dim=-1)


def from_tangent_space(local: torch.Tensor, normal: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
    """The inverse: tangent-space normals [...,3] -> world [...,3] unit (what a viewer shades)."""
    t, b = _frame(normal, tangent)
    world = local[..., :1] * t + local[..., 1:2] * b + local[..., 2:] * normal
    return torch.nn.functional.normalize(world, dim=-1)


def dense_normals_at(points: torch.Tensor, dense_verts: torch.Tensor, dense_faces: torch.Tensor,
                     neighbours: int = 4) -> torch.Tensor:
    """[N,3] normals of the dense surface near the points: its smooth vertex normals, the
    nearest few weighted by inverse squared distance (a k-d tree)."""
    from scipy.spatial import cKDTree

    dn = vertex_normals(dense_verts, dense_faces)
    dist, idx = cKDTree(dense_verts.numpy()).query(points.numpy(), k=neighbours)
    w = 1.0 / (torch.from_numpy(dist).float() ** 2 + 1e-12)
    n = (dn[torch.from_numpy(idx.astype(np.int64))] * w[..., None]).sum(1)
    return torch.nn.functional.normalize(n, dim=-1)


def bake_normal_map(raster: Rasterizer, verts: torch.Tensor, faces: torch.Tensor, uv: torch.Tensor,
                    normals: torch.Tensor, dense_verts: torch.Tensor, dense_faces: torch.Tensor,
                    size: int, dilation: int = 16) -> torch.Tensor:
    """[size,size,3] in [0,1]: the dense surface's normals in the export's tangent frames
    (flat (0.5, 0.5, 1) where the two agree), dilated across UV seams."""
    tangents = vertex_tangents(verts, faces, uv, normals)
    gbuf, filled = uv_gbuffer(raster, torch.cat([verts, normals, tangents], -1), faces, uv, size)
    filled = filled.cpu()
    out = torch.zeros(size, size, 3)
    out[..., 2] = 1.0
    if filled.any():
        texels = gbuf[filled].cpu()
        normal = torch.nn.functional.normalize(texels[:, 3:6], dim=-1)
        high = dense_normals_at(texels[:, :3], dense_verts.cpu(), dense_faces.cpu())
        local = to_tangent_space(high, normal, texels[:, 6:10])
        local[:, 2] = local[:, 2].clamp(min=0.05)  # a dense normal facing away: keep the map in front
        out[filled] = torch.nn.functional.normalize(local, dim=-1)
    return dilate(out * 0.5 + 0.5, filled, dilation)
