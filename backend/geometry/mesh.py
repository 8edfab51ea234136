"""Triangle meshes: the data class, normals, loading any mesh file, normalisation.

Coordinates are the world frame of render/camera.py (glTF: +Y up). UVs follow glTF
(v = 0 at the texture image's top row), textures are [H,W,3] float in [0,1].
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import MeshError
from .mesh_files import (MAX_MESH_BYTES, MAX_TEXTURE_PIXELS, SIZE_HINT, Refusal, check_mesh_file, confined_resolver,
                         too_many)


@dataclass
class Mesh:
    """verts [V,3] float, faces [F,3] long; optional uv [V,2], texture [H,W,3] in [0,1],
    colors [V,3] in [0,1] (vertex colours, used when there is no texture), normal_map
    [H,W,3] in [0,1] (tangent space, glTF convention: export/normal_map.py),
    roughness_metallic [H,W,2] in [0,1] (a PBR material's maps, through the same UVs)."""

    verts: torch.Tensor
    faces: torch.Tensor
    uv: torch.Tensor | None = None
    texture: torch.Tensor | None = None
    colors: torch.Tensor | None = None
    normal_map: torch.Tensor | None = None
    roughness_metallic: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "Mesh":
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, verts=self.verts.to(device), faces=self.faces.to(device), uv=mv(self.uv),
                       texture=mv(self.texture), colors=mv(self.colors), normal_map=mv(self.normal_map),
                       roughness_metallic=mv(self.roughness_metallic))

    @property
    def has_color(self) -> bool:
        return (self.uv is not None and self.texture is not None) or self.colors is not None

    def face_normals(self) -> torch.Tensor:
        return face_normals(self.verts, self.faces)

    def vertex_normals(self) -> torch.Tensor:
        return vertex_normals(self.verts, self.faces)

    def bbox_diagonal(self) -> float:
        return float((self.verts.max(0).values - self.verts.min(0).values).norm())


def face_normals(verts: torch.Tensor, faces: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """[F,3] face normals (counter-clockwise winding is front); unnormalised = 2*area*n."""
    v0, v1, v2 = (verts[faces[:, i]] for i in range(3))
    n = torch.linalg.cross(v1 - v0, v2 - v0)
    return torch.nn.functional.normalize(n, dim=-1) if normalize else n


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[V,3] area-weighted vertex normals."""
    fn = face_normals(verts, faces, normalize=False)
    vn = torch.zeros_like(verts).index_add(0, faces.reshape(-1), fn.repeat_interleave(3, dim=0))
    return torch.nn.functional.normalize(vn, dim=-1, eps=1e-12)


def creased_normals(verts: torch.Tensor, faces: torch.Tensor, crease_deg: float) -> torch.Tensor:
    """Per-corner normals [F,3,3]: at each corner, the angle-weighted mean of the normals of
    the faces around its vertex that turn less than crease_deg from this corner's face (the
    rule of three.js's toCreasedNormals; Blender's auto smooth draws the same line at sharp
    edges). Smooth where the surface is smooth, split at creases. Faces meet at a vertex
    only through shared indices: weld positions first where UV seams split them."""
    fn = face_normals(verts, faces)
    corners = verts[faces]  # [F,3,3]
    e1 = torch.nn.functional.normalize(corners.roll(-1, 1) - corners, dim=-1)
    e2 = torch.nn.functional.normalize(corners.roll(1, 1) - corners, dim=-1)
    angle = torch.acos((e1 * e2).sum(-1).clamp(-1, 1)).reshape(-1)  # [3F] corner angles
    vid = faces.reshape(-1)
    order = torch.argsort(vid, stable=True)
    counts = torch.bincount(vid, minlength=verts.shape[0])
    starts = torch.cumsum(counts, 0) - counts
    deg = counts[vid]  # corners sharing each corner's vertex
    src = torch.arange(vid.shape[0]).repeat_interleave(deg)
    offset = torch.arange(src.shape[0]) - (torch.cumsum(deg, 0) - deg).repeat_interleave(deg)
    dst = order[starts[vid[src]] + offset]
    n_src, n_dst = fn[src // 3], fn[dst // 3]
    keep = (n_src * n_dst).sum(-1) >= math.cos(math.radians(crease_deg)) - 1e-6
    acc = torch.zeros(vid.shape[0], 3, dtype=verts.dtype).index_add(
        0, src[keep], angle[dst[keep], None] * n_dst[keep])
    out = torch.nn.functional.normalize(acc, dim=-1, eps=1e-12)
    # A corner of zero-area faces only has no normal of its own: its vertex's area-weighted
    # normal, else +Y (glTF wants unit normals everywhere).
    lost = out.norm(dim=-1) < 0.5
    if lost.any():
        fallback = vertex_normals(verts, faces)[vid]
        up = torch.tensor([0.0, 1.0, 0.0], dtype=verts.dtype).expand_as(fallback)
        fallback = torch.where(fallback.norm(dim=-1, keepdim=True) > 0.5, fallback, up)
        out = torch.where(lost[:, None], fallback, out)
    return out.reshape(-1, 3, 3)


def weld(verts: torch.Tensor) -> torch.Tensor:
    """[V] index of each vertex's first twin at the same position (UV seams split vertices)."""
    _, inverse = torch.unique(verts, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), verts.shape[0], dtype=torch.long)
    return first.scatter_reduce(0, inverse, torch.arange(verts.shape[0]), "amin")[inverse]


def uv_lookup(tex: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear texture lookup, edges clamped. tex: [B,Ht,Wt,C] (or [1,...] shared); uv:
    [B,H,W,2] in [0,1] with v = 0 at the image's first (top) row, as glTF stores it ->
    [B,H,W,C]."""
    if tex.shape[0] == 1 and uv.shape[0] > 1:
        tex = tex.expand(uv.shape[0], -1, -1, -1)
    out = torch.nn.functional.grid_sample(tex.permute(0, 3, 1, 2), uv * 2 - 1, mode="bilinear",
                                          padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def sample_colors(mesh: Mesh, uv: torch.Tensor | None, colors: torch.Tensor | None) -> torch.Tensor:
    """Albedo of interpolated attributes: uv [...,2] -> texture lookup, else colours [...,3],
    else mid grey."""
    if uv is not None and mesh.texture is not None:
        flat = uv.reshape(1, -1, 1, 2)
        return uv_lookup(mesh.texture[None], flat).reshape(*uv.shape[:-1], mesh.texture.shape[-1])
    if colors is not None:
        return colors
    raise MeshError("mesh has neither a texture nor vertex colours")


def load_mesh(path: str | Path) -> Mesh:
    """Load GLB/glTF/OBJ/PLY/STL (all parts, node transforms applied) as one Mesh.

    Raises MeshError with an actionable message for unreadable files, point clouds, empty
    meshes, and files that refer outside themselves or are too large (mesh_files.py: both
    checked before the file is parsed)."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise MeshError(f"mesh file not found: {path}")
    size = path.stat().st_size
    if size > MAX_MESH_BYTES:
        raise Refusal(f"{path.name} is {size:,} bytes; a mesh file may have at most {MAX_MESH_BYTES:,}", SIZE_HINT)
    data = path.read_bytes()
    check_mesh_file(path, data)
    resolver = confined_resolver(path)
    try:
        loaded = trimesh.load(io.BytesIO(data), file_type=path.suffix.lower().lstrip("."), resolver=resolver,
                              process=False)
    except Exception as exc:  # trimesh raises many types for bad files
        if resolver.refused:
            raise resolver.refused[0] from None
        raise MeshError(f"could not read {path.name} as a mesh ({exc}); export it as GLB or OBJ") from exc
    if resolver.refused:  # trimesh goes on without a material it could not load: the refusal is the answer
        raise resolver.refused[0]
    geoms = list(loaded.dump()) if isinstance(loaded, trimesh.Scene) else [loaded]
    meshes = [g for g in geoms if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    if not meshes:
        kinds = sorted({type(g).__name__ for g in geoms}) or ["nothing"]
        raise MeshError(f"{path.name} holds no triangles (found: {', '.join(kinds)}); "
                        "a point cloud or empty file cannot be used: give a surface mesh")
    too_many(path.name, sum(len(m.faces) for m in meshes), "holds")  # polygons split: counted again
    parts = [_from_trimesh(m, path.name) for m in meshes]
    return parts[0] if len(parts) == 1 else _concat(parts)


def _from_trimesh(m, name: str) -> Mesh:  # noqa: ANN001 (trimesh type is optional at import time)
    verts = torch.tensor(np.asarray(m.vertices), dtype=torch.float32)
    faces = torch.tensor(np.asarray(m.faces), dtype=torch.long)
    uv = tex = colors = None
    visual = m.visual
    if visual.kind == "texture" and getattr(visual, "uv", None) is not None:
        image = getattr(visual.material, "baseColorTexture", None) or getattr(visual.material, "image", None)
        if image is not None:
            if image.size[0] * image.size[1] > MAX_TEXTURE_PIXELS:  # before it is decoded
                raise Refusal(f"{name}: its texture is a {image.size[0]}x{image.size[1]} image; at most "
                              f"{MAX_TEXTURE_PIXELS:,} pixels", SIZE_HINT)
            uv_np = np.asarray(visual.uv, dtype=np.float32).copy()
            uv_np[:, 1] = 1.0 - uv_np[:, 1]  # trimesh holds OpenGL-style v; ours is glTF's
            uv = torch.tensor(uv_np)
            tex = torch.tensor(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
        else:
            factor = getattr(visual.material, "baseColorFactor", None)
            if factor is not None:
                colors = torch.tensor(np.asarray(factor[:3], dtype=np.float32) / 255.0).expand(len(verts), 3).clone()
    elif visual.kind in ("vertex", "face"):
        colors = torch.tensor(np.asarray(visual.vertex_colors)[:, :3], dtype=torch.float32) / 255.0
    return Mesh(verts, faces, uv, tex, colors)


def _concat(parts: list[Mesh]) -> Mesh:
    """Join parts; textured parts are baked to vertex colours so one material remains."""
    verts, faces, colors, offset = [], [], [], 0
    for p in parts:
        verts.append(p.verts)
        faces.append(p.faces + offset)
        offset += p.verts.shape[0]
        if p.uv is not None and p.texture is not None:
            colors.append(sample_colors(p, p.uv, None))
        else:
            colors.append(p.colors if p.colors is not None else torch.full_like(p.verts, 0.7))
    has_color = any(p.has_color for p in parts)
    return Mesh(torch.cat(verts), torch.cat(faces), colors=torch.cat(colors) if has_color else None)


@dataclass
class Normalization:
    """world = unit * scale + center; maps a mesh into the unit frame and back."""

    center: list[float]
    scale: float

    def apply(self, verts: torch.Tensor) -> torch.Tensor:
        return (verts - verts.new_tensor(self.center)) / self.scale

    def undo(self, verts: torch.Tensor) -> torch.Tensor:
        return verts * self.scale + verts.new_tensor(self.center)


def normalization_for(verts: torch.Tensor, radius: float = 0.8) -> Normalization:
    """Centre the bounding box at the origin and scale the farthest vertex to `radius`."""
    center = (verts.max(0).values + verts.min(0).values) / 2
    scale = float((verts - center).norm(dim=-1).max()) / radius
    if not np.isfinite(scale) or scale <= 0:
        raise MeshError("mesh is degenerate: all vertices coincide")
    return Normalization(center.tolist(), scale)


def normalized(mesh: Mesh, radius: float = 0.8) -> tuple[Mesh, Normalization]:
    norm = normalization_for(mesh.verts, radius)
    return replace(mesh, verts=norm.apply(mesh.verts)), norm
