"""From optimised geometry + texture field to a UV-mapped, textured GLB.

cleanup (geometry/cleanup.py): duplicates, decimation to the face budget (the runner's
surface arrives within it, its object's pieces kept before and after decimation:
geometry/pieces.py); unwrap (xatlas) with padding;
bake: rasterise the mesh in UV space, query the texture field at each texel's surface
point, dilate across seams; write GLB with a PBR material: base colour, metallic-roughness
and normal textures (trimesh). UVs follow glTF (v = 0 at the image's top row).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..atomic import atomic_path
from ..geometry.cleanup import cleanup
from ..geometry.mesh import Mesh, creased_normals, weld
from ..geometry.pieces import PieceConfig
from ..render.raster import Rasterizer
from ..schema import setting
from .bake import bake
from .normal_map import bake_normal_map, vertex_tangents


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """What the GLB is made of (a preset's `export`): the face budget; the pieces a result
    keeps (geometry/pieces.py); texture side, UV padding (texels) and preview
    size (pixels); the crease angle (degrees) above which normals split; a tangent-space
    normal map of the dense surface; the metallic and roughness of a diffuse material."""

    texture_size: int = setting(lo=16, hi=8192)
    max_faces: int = setting(lo=100, hi=50_000_000)
    pieces: PieceConfig = setting()
    uv_padding: int = setting(lo=0, hi=64)
    preview_resolution: int = setting(lo=16, hi=4096)
    crease_angle: float = setting(lo=0.0, hi=180.0)
    normal_map: bool = setting()
    metallic: float = setting(lo=0.0, hi=1.0)
    roughness: float = setting(lo=0.0, hi=1.0)


def unwrap(verts: torch.Tensor, faces: torch.Tensor, resolution: int, padding: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """xatlas parametrisation -> new verts [V',3] (split at seams), faces [F,3], uv [V',2]."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(verts.numpy(), faces.numpy().astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.padding, pack.resolution, pack.bilinear = padding, resolution, True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, indices, uvs = atlas[0]
    return (verts[torch.from_numpy(vmapping.astype(np.int64))], torch.from_numpy(indices.astype(np.int64)),
            torch.from_numpy(uvs.astype(np.float32)))


def baked_mesh(raster: Rasterizer, verts: torch.Tensor, faces: torch.Tensor, uv: torch.Tensor,
               material_fn: Callable[[torch.Tensor], torch.Tensor], size: int) -> Mesh:
    """The mesh with material_fn (albedo [N,3], or a PBR field's [N,5]) baked into its UVs:
    texture, and roughness_metallic for a PBR material."""
    maps = bake(raster, verts, faces, uv, material_fn, size)
    return Mesh(verts, faces, uv=uv, texture=maps[..., :3],
                roughness_metallic=maps[..., 3:5] if maps.shape[-1] == 5 else None)


def build_textured_mesh(raster: Rasterizer, verts: torch.Tensor, faces: torch.Tensor,
                        material_fn: Callable[[torch.Tensor], torch.Tensor], export_cfg: ExportConfig) -> Mesh:
    """The dense surface (verts, faces) cleaned of duplicates, decimated to the face budget,
    unwrapped and baked: base colour (and roughness, metallic for a PBR material_fn), and with
    export.normal_map the dense surface's normals in the exported normals' tangent frames
    (the same smooth_split write_glb makes)."""
    v, f, _ = cleanup(verts, faces, export_cfg.max_faces)
    if f.shape[0] == 0:
        raise ValueError("nothing left after cleanup: the surface is empty or made of specks")
    size = export_cfg.texture_size
    v, f, uv = unwrap(v, f, size, export_cfg.uv_padding)
    mesh = baked_mesh(raster, v, f, uv, material_fn, size)
    if export_cfg.normal_map:
        split, normals = smooth_split(mesh, export_cfg.crease_angle)
        mesh = replace(mesh, normal_map=bake_normal_map(raster, split.verts, split.faces, split.uv, normals,
                                                        verts.cpu(), faces.cpu(), size))
    return mesh


def smooth_split(mesh: Mesh, crease_deg: float) -> tuple[Mesh, torch.Tensor]:
    """The mesh with a normal per vertex: creased normals (geometry/mesh.py) computed across
    UV seams, vertices split where their corners' normals differ. -> (mesh, normals [V',3])."""
    welded = weld(mesh.verts)
    corner = creased_normals(mesh.verts, welded[mesh.faces], crease_deg).reshape(-1, 3)
    key = torch.cat([mesh.faces.reshape(-1, 1).double(), corner.double().round(decimals=6)], 1)
    unique, inverse = torch.unique(key, dim=0, return_inverse=True)
    index = unique[:, 0].long()
    pick = lambda t: None if t is None else t[index]  # noqa: E731
    out = replace(mesh, verts=mesh.verts[index], faces=inverse.reshape(-1, 3), uv=pick(mesh.uv),
                  colors=pick(mesh.colors))
    return out, torch.nn.functional.normalize(unique[:, 1:].float(), dim=-1)


def metallic_roughness_image(mesh: Mesh, metallic: float, roughness: float) -> np.ndarray:
    """[H,W,3] uint8 in glTF's packing (G roughness, B metallic; R is occlusion's channel,
    left at 255 = unoccluded): the mesh's maps, else the constants at the base colour's size
    (a texture an artist can paint into)."""
    h, w = mesh.texture.shape[:2]
    if mesh.roughness_metallic is not None:
        rm = mesh.roughness_metallic.detach().float().clamp(0, 1).numpy()
    else:
        rm = np.broadcast_to(np.array([roughness, metallic], np.float32), (h, w, 2))
    out = np.full((*rm.shape[:2], 3), 255, np.uint8)
    out[..., 1:] = (rm * 255 + 0.5).astype(np.uint8)
    return out


def write_glb(mesh: Mesh, path: str | Path, crease_deg: float, metallic: float, roughness: float) -> None:
    """GLB with smooth normals split at creases (NORMAL) and one PBR material: base colour
    from the mesh's texture (or vertex colours), a metallicRoughnessTexture (the mesh's
    maps, else the constant metallic and roughness), and the mesh's normal map with the
    TANGENT frames it was baked in (export/normal_map.py; importers that recompute
    MikkTSpace tangents see nearly the same frames)."""
    import trimesh
    from PIL import Image

    mesh, normals = smooth_split(mesh.to("cpu"), crease_deg)
    verts, faces = mesh.verts.detach().numpy(), mesh.faces.numpy()
    attributes = {}
    to_image = lambda t: Image.fromarray((t.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))  # noqa: E731
    if mesh.uv is not None and mesh.texture is not None:
        normal_map = None
        if mesh.normal_map is not None:
            normal_map = to_image(mesh.normal_map)
            attributes["_TANGENT"] = vertex_tangents(mesh.verts, mesh.faces, mesh.uv, normals).numpy()
        material = trimesh.visual.material.PBRMaterial(
            baseColorTexture=to_image(mesh.texture), normalTexture=normal_map,
            metallicRoughnessTexture=Image.fromarray(metallic_roughness_image(mesh, metallic, roughness)),
            metallicFactor=1.0, roughnessFactor=1.0, doubleSided=False)
        uv = mesh.uv.numpy().copy()
        uv[:, 1] = 1.0 - uv[:, 1]  # trimesh expects OpenGL-style v and flips it back on export
        visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    elif mesh.colors is not None:
        visual = trimesh.visual.ColorVisuals(vertex_colors=(mesh.colors.numpy() * 255).astype(np.uint8))
    else:
        visual = None
    tm = trimesh.Trimesh(verts, faces, vertex_normals=normals.numpy(), visual=visual, process=False,
                         vertex_attributes=attributes)

    def standard_tangents(tree: dict) -> None:  # trimesh writes custom attributes as "_NAME"
        for m in tree.get("meshes", []):
            for prim in m["primitives"]:
                if "_TANGENT" in prim["attributes"]:
                    prim["attributes"]["TANGENT"] = prim["attributes"].pop("_TANGENT")

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tm.export(str(tmp), file_type="glb", include_normals=True, tree_postprocessor=standard_tangents)
