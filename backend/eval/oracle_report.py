"""How close an oracle run came to its target, from 8 held-out views.

Training cameras are drawn at random; these 8 fixed views (elevations 20 / -10 degrees,
azimuths offset by 22.5 degrees) are never sampled exactly. Texture and normal PSNR are
taken on the pixels both silhouettes cover, eroded by one pixel: a boundary pixel is an
antialiased mix with the background, so a sub-pixel silhouette shift would count there as
colour error. Silhouette error is what IoU and Chamfer measure.

file_report measures the exported file on its own, the way a viewer frames it: its pieces
(positions welded), the surface outside the target's box, and the Chamfer distance with
each mesh centred and scaled by its own bounding box. A few small pieces weigh little in the
job's frame, but a floater far out stretches the box a viewer frames.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..geometry.manifold import edge_defects
from ..geometry.mesh import Mesh, load_mesh
from ..geometry.pieces import find_pieces
from ..render.mesh_material import mesh_material
from ..render.camera import orbit_cameras
from ..render.mesh_renderer import render_mesh
from ..render.raster import Rasterizer
from ..render.shading import Views, fixed_views
from .metrics import chamfer, iou, psnr


def held_out_views(resolution: int = 128, shading: str = "albedo") -> Views:
    az = 22.5 + 45.0 * torch.arange(8, dtype=torch.float32)
    el = torch.tensor([20.0, -10.0] * 4)
    return fixed_views(orbit_cameras(el, az, 2.5, 40.0, resolution), shading)


def _render(raster: Rasterizer, mesh: Mesh, views: Views, material: Callable | None):  # noqa: ANN202
    if material is None and mesh.has_color:
        material, extras = mesh_material(mesh)
        return render_mesh(raster, mesh.verts, mesh.faces, views, material, extras)
    return render_mesh(raster, mesh.verts, mesh.faces, views, material)


@torch.no_grad()
def oracle_report(raster: Rasterizer, target: Mesh, result: Mesh,
                  albedo_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, resolution: int = 128) -> dict:
    """Chamfer (relative to the target's bbox diagonal), silhouette IoU, texture PSNR,
    normal-map PSNR and lit PSNR (the "lambertian" mode, light from the camera: a PBR
    material's roughness and metallic show there). albedo_fn colours an untextured result
    (e.g. a texture field; [N,3], or [N,5] with roughness and metallic)."""
    material = (lambda xyz, ex: albedo_fn(xyz)) if albedo_fn is not None else None
    device = target.verts.device
    rgb_views, nrm_views = held_out_views(resolution).to(device), held_out_views(resolution, "normal").to(device)
    t_rgb, r_rgb = _render(raster, target, rgb_views, None), _render(raster, result, rgb_views, material)
    t_nrm, r_nrm = _render(raster, target, nrm_views, None), _render(raster, result, nrm_views, None)
    lit_views = held_out_views(resolution, "lambertian").to(device)
    t_lit, r_lit = _render(raster, target, lit_views, None), _render(raster, result, lit_views, material)
    both = t_rgb.mask * r_rgb.mask
    interior = -torch.nn.functional.max_pool2d(-both.permute(0, 3, 1, 2), 3, 1, 1).permute(0, 2, 3, 1)
    return {
        "chamfer_rel": chamfer(result.verts, result.faces, target.verts, target.faces) / target.bbox_diagonal(),
        "iou": iou(t_rgb.mask, r_rgb.mask),
        "texture_psnr": psnr(r_rgb.image, t_rgb.image, interior),
        "normal_psnr": psnr(r_nrm.image, t_nrm.image, interior),
        "lit_psnr": psnr(r_lit.image, t_lit.image, interior),
        "image_psnr": psnr(r_rgb.image, t_rgb.image),
    }


# The bars of a clean file (issue 37): no piece under 1% of the surface's area, no surface
# further than 2% of the target's diagonal outside the target's box, and the Chamfer framed by
# each mesh's own box within 0.1 percentage points of the job frame's.
SMALL_PIECE = 0.01
BOX_MARGIN = 0.02
OWN_BOX_CHAMFER = 0.001


def own_box(verts: torch.Tensor) -> torch.Tensor:
    """verts [V,3] centred on their bounding box and scaled to a unit diagonal."""
    lo, hi = verts.min(0).values, verts.max(0).values
    return (verts - (lo + hi) / 2) / (hi - lo).norm()


def file_report(path: str | Path, target: Mesh) -> dict:
    """The exported file on its own against the target (in the file's frame): pieces (count;
    small_pieces: how many are under SMALL_PIECE of the area, small_share: their share of
    it, smallest_share), outside_box: how far the surface reaches outside the target's box,
    relative to its diagonal (0 inside), and chamfer_own_box: Chamfer with each mesh framed
    by its own box (relative to that box's diagonal; oracle_report's chamfer_rel is the job
    frame's, relative to the target's); open_edges and nonmanifold_edges: edges of one face and
    of three or more, welded by position (0 and 0: watertight, geometry/manifold.py)."""
    mesh = load_mesh(path)
    verts, faces = mesh.verts.double(), mesh.faces
    pieces = find_pieces(verts.numpy(), faces.numpy())
    share = pieces.share()
    small = share < SMALL_PIECE
    t = target.verts.detach().cpu().double()
    lo, hi = t.min(0).values, t.max(0).values
    used = verts[torch.unique(faces)]
    outside = torch.maximum(lo - used, used - hi).clamp(min=0).norm(dim=-1).max()
    own = chamfer(own_box(verts).float(), faces, own_box(t).float(), target.faces.cpu())
    open_edges, nonmanifold = edge_defects(pieces.welded)
    return {"pieces": len(pieces), "small_pieces": int(small.sum()), "small_share": float(share[small].sum()),
            "smallest_share": float(np.min(share)), "outside_box": float(outside / (hi - lo).norm()),
            "chamfer_own_box": own, "open_edges": open_edges, "nonmanifold_edges": nonmanifold}
