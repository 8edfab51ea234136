"""Tangent-space normal maps: the glTF tangent frame on known layouts, and a bumpy target
decimated to few faces that, with its baked map, shows the target's normals closer than
its smooth normals alone (normal PSNR from held-out views)."""
import math

import torch
import trimesh

from backend.export.mesh_export import ExportConfig, build_textured_mesh, smooth_split
from backend.export.normal_map import from_tangent_space, to_tangent_space, vertex_tangents
from backend.geometry.mesh import uv_lookup
from backend.render.camera import orbit_cameras
from backend.render.mesh_renderer import clip_positions, render_mesh
from backend.render.shading import fixed_views

from .helpers import NO_REMOVAL

QUAD_V = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
QUAD_F = torch.tensor([[0, 1, 2], [0, 2, 3]])
UP = torch.tensor([0.0, 0.0, 1.0]).expand(4, 3)


def test_tangent_frame_follows_u_and_image_up():
    # glTF UVs: u = x, v = 1 - y (image rows grow downwards, world y grows up): T = +x, B = +y
    uv = torch.stack([QUAD_V[:, 0], 1 - QUAD_V[:, 1]], -1)
    t = vertex_tangents(QUAD_V, QUAD_F, uv, UP)
    assert torch.allclose(t, torch.tensor([1.0, 0.0, 0.0, 1.0]).expand(4, 4), atol=1e-6)
    # the texture mirrored in u: T = -x and the handedness flips so B stays +y (image up)
    mirrored = torch.stack([1 - QUAD_V[:, 0], 1 - QUAD_V[:, 1]], -1)
    t_mirrored = vertex_tangents(QUAD_V, QUAD_F, mirrored, UP)
    assert torch.allclose(t_mirrored, torch.tensor([-1.0, 0.0, 0.0, -1.0]).expand(4, 4), atol=1e-6)
    # a normal leaning to +x and +y: red right (+u), green up, blue out
    n = torch.nn.functional.normalize(torch.tensor([[0.3, 0.2, 1.0]]), dim=-1).expand(4, 3)
    unit = lambda x, y, z: torch.nn.functional.normalize(torch.tensor([x, y, z]), dim=0).expand(4, 3)  # noqa: E731
    assert torch.allclose(to_tangent_space(n, UP, t), unit(0.3, 0.2, 1.0), atol=1e-6)
    assert torch.allclose(to_tangent_space(n, UP, t_mirrored), unit(-0.3, 0.2, 1.0), atol=1e-6)
    assert torch.allclose(from_tangent_space(to_tangent_space(n, UP, t), UP, t), n, atol=1e-6)


def _bumpy_sphere() -> tuple[torch.Tensor, torch.Tensor]:
    s = trimesh.creation.icosphere(5, 1.0)
    v = torch.tensor(s.vertices, dtype=torch.float32)
    bumps = 0.03 * torch.sin(14 * v[:, 0]) * torch.sin(14 * v[:, 1]) * torch.sin(14 * v[:, 2])
    return v * (0.6 + bumps)[:, None], torch.tensor(s.faces)


def _normal_image(raster, verts, faces, uv, normals, views, normal_map=None):  # noqa: ANN001, ANN202
    """World normals seen through the views: interpolated vertex normals, or with a map
    decoded in the interpolated tangent frames (what a glTF viewer shades)."""
    tangents = vertex_tangents(verts, faces, uv, normals)
    pos = clip_positions(verts, views.cams.mvp)
    rast = raster.rasterize(pos, faces.int(), (views.cams.height, views.cams.width))
    g = raster.interpolate(torch.cat([uv, normals, tangents], -1), rast, faces.int())
    n = torch.nn.functional.normalize(g[..., 2:5], dim=-1)
    if normal_map is not None:
        local = uv_lookup(normal_map[None], g[..., :2]) * 2 - 1
        n = from_tangent_space(local, n, g[..., 5:9])
    return n, rast[..., 3:] > 0


def _psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    mse = (((a - b) * 0.5) ** 2).sum(-1, keepdim=True)[mask].mean() / 3
    return float(10 * math.log10(1 / mse))


def test_baked_normal_map_brings_back_the_dense_surface_detail(raster):
    verts, faces = _bumpy_sphere()
    cfg = ExportConfig(max_faces=800, pieces=NO_REMOVAL, texture_size=512, uv_padding=4, normal_map=True,
                       crease_angle=60.0, preview_resolution=64, metallic=0.0, roughness=0.9)
    mesh = build_textured_mesh(raster, verts, faces, lambda x: torch.full_like(x, 0.5), cfg)
    low, normals = smooth_split(mesh, 60.0)
    views = fixed_views(orbit_cameras(torch.tensor([10.0, 35.0, -20.0]), torch.tensor([20.0, 140.0, 250.0]),
                                      2.2, 40.0, 128))  # none of them an axis the bumps line up with
    target = render_mesh(raster, verts, faces, views, antialias=False)
    plain, mask = _normal_image(raster, low.verts, low.faces, low.uv, normals, views)
    mapped, _ = _normal_image(raster, low.verts, low.faces, low.uv, normals, views, mesh.normal_map)
    both = mask & (target.mask > 0)
    without, with_map = _psnr(plain, target.normal, both), _psnr(mapped, target.normal, both)
    # measured 2026-11-23 (CPU): 22.0 dB without the map, 35.5 dB with it
    assert with_map > without + 6.0, (without, with_map)
