"""The user's mesh for stylize and edit: loaded, checked, fixed where a fix is safe, and
moved into the unit frame the pipeline works in (the transform is kept to undo on export).

Automatic fixes (each reported): a mesh over `max_faces` is decimated (quadric edge
collapse, in stages with progress between them: decimate.py; its texture becomes vertex
colours first, its UVs are then rebuilt on export);
any position and scale is recentred and rescaled. Refused with a MeshError: unreadable
files, point clouds, meshes without faces, non-finite vertices, all-coincident vertices.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .cleanup import cleanup
from .decimate import coarse_stages, decimate_coarsely
from ..errors import MeshError
from ..progress import Stages
from .mesh import Mesh, Normalization, load_mesh, normalization_for, sample_colors
from .mesh_sdf import sample_surface
from .pieces import count_parts


@dataclass
class SourceMesh:
    mesh: Mesh  # in the unit frame
    norm: Normalization  # unit frame -> the file's frame
    uv_valid: bool  # the file's UVs can take the new texture
    fixes: list[str]
    parts: int  # its pieces (geometry/pieces.py): the export keeps as many


def uvs_valid(mesh: Mesh) -> bool:
    """UVs present, finite, inside [0,1] and covering some area on nearly all faces."""
    if mesh.uv is None or mesh.uv.shape[0] != mesh.verts.shape[0] or not torch.isfinite(mesh.uv).all():
        return False
    if mesh.uv.min() < -1e-3 or mesh.uv.max() > 1 + 1e-3:
        return False  # tiling UVs: a baked texture cannot hold them
    t = mesh.uv[mesh.faces]
    area = ((t[:, 1] - t[:, 0])[:, 0] * (t[:, 2] - t[:, 0])[:, 1]
            - (t[:, 1] - t[:, 0])[:, 1] * (t[:, 2] - t[:, 0])[:, 0]).abs() / 2
    return bool((area > 1e-10).float().mean() > 0.95)


def vertex_colors(mesh: Mesh) -> torch.Tensor | None:
    """[V,3] colours at the vertices (texture sampled at their UVs), or None."""
    if mesh.uv is not None and mesh.texture is not None:
        return sample_colors(mesh, mesh.uv, None)
    return mesh.colors


def prepare_source(path: str | Path, max_faces: int, stages: Stages | None = None) -> SourceMesh:
    """stages: where the decimation's progress goes (cancel honoured between its stages)."""
    mesh = load_mesh(path)
    name = Path(path).name
    if not torch.isfinite(mesh.verts).all():
        raise MeshError(f"{name} has vertices at infinity or NaN: fix or re-export the mesh")
    fixes: list[str] = []
    n_faces = mesh.faces.shape[0]
    if n_faces > max_faces:
        stages = stages or Stages(lambda event: None, lambda: False, "input")
        stages.add(coarse_stages(n_faces, max_faces) + 1)
        v, f, c = decimate_coarsely(mesh.verts, mesh.faces, max_faces, stages.start, vertex_colors(mesh))
        stages.start(f"decimating {f.shape[0]:,} -> {max_faces:,} faces")
        v, f, c = cleanup(v, f, max_faces, c)
        stages.finish()
        mesh = Mesh(v, f, colors=c)
        fixes.append(f"decimated from {n_faces} to {f.shape[0]} faces (source.max_faces = {max_faces})")
    norm = normalization_for(mesh.verts)
    center = torch.tensor(norm.center)
    if float(center.norm()) > 10 * norm.scale:
        fixes.append(f"recentred: its centre was {float(center.norm()):.4g} units from the origin")
    return SourceMesh(replace(mesh, verts=norm.apply(mesh.verts)), norm, uvs_valid(mesh), fixes,
                      count_parts(mesh.verts, mesh.faces))


def colored_samples(mesh: Mesh, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Points [count,3] on the surface with their colours [count,3] in [0,1], or None
    when the mesh has no colour."""
    if not mesh.has_color:
        return None
    idx, bary = sample_surface(mesh.verts, mesh.faces, count, seed)
    tri = mesh.faces.cpu()[idx]
    points = (mesh.verts.cpu()[tri] * bary[..., None]).sum(1)
    uv = (mesh.uv.cpu()[tri] * bary[..., None]).sum(1) if mesh.uv is not None and mesh.texture is not None else None
    colors = (mesh.colors.cpu()[tri] * bary[..., None]).sum(1) if mesh.colors is not None else None
    return points, sample_colors(mesh.to("cpu"), uv, colors).clamp(0, 1)
