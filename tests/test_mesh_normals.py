"""How render_mesh shades a surface's normals (Views.normals): "face" gives each pixel its triangle's normal
(phase II's DMTet, whose vertices are grid-edge crossings), "vertex" the interpolated
area-weighted vertex normals (the user's mesh). Known answers on a cube whose 8 corners are
shared by its faces, the case where the two differ most."""
import torch
import trimesh

from backend.geometry.mesh import face_normals
from backend.render.camera import orbit_cameras
from backend.render.mesh_renderer import clip_positions, render_mesh
from backend.render.shading import fixed_views

AXES = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])


def _cube() -> tuple[torch.Tensor, torch.Tensor]:
    box = trimesh.creation.box((0.8, 0.8, 0.8))  # 8 vertices, each shared by three faces
    assert len(box.vertices) == 8
    return torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces, dtype=torch.long)


def _views(normals: str = "vertex"):  # noqa: ANN202 (Views)
    # three faces seen at once from above a corner, and one face-on
    cams = orbit_cameras(torch.tensor([30.0, 0.0]), torch.tensor([45.0, 0.0]), 2.5, 40.0, 96)
    return fixed_views(cams, "normal").with_normals(normals)


def test_face_normals_give_each_pixel_its_triangles_normal(raster):
    verts, faces = _cube()
    views = _views("face")
    out = render_mesh(raster, verts, faces, views, antialias=False)
    covered = out.mask[..., 0] > 0
    rast = raster.rasterize(clip_positions(verts, views.cams.mvp), faces.int(), (96, 96))
    expect = face_normals(verts, faces)[rast[..., 3].long() - 1]
    assert torch.allclose(out.normal[covered], expect[covered], atol=1e-6)
    # a cube's faces: every covered pixel is one of the six axes exactly
    err = (out.normal[covered][:, None, :] - AXES[None]).abs().amax(-1).amin(-1)
    assert float(err.max()) < 1e-6
    # the normal map is (n + 1) / 2
    assert torch.allclose(out.image[covered], expect[covered] * 0.5 + 0.5, atol=1e-6)


def test_vertex_normals_round_a_shared_corner_cube(raster):
    verts, faces = _cube()
    out = render_mesh(raster, verts, faces, _views("vertex"), antialias=False)
    covered = out.mask[..., 0] > 0
    # every corner's normal is the diagonal (area-weighted over three equal faces), so
    # interpolated normals lie between the axes: within 10 degrees of an axis only at a face's centre
    cos_to_axis = (out.normal[covered] @ AXES.T).amax(-1)
    assert float((cos_to_axis < torch.cos(torch.deg2rad(torch.tensor(10.0)))).float().mean()) > 0.5


def test_face_normal_gradients_are_the_face_normals_derivatives(raster):
    """With coverage fixed, d(sum of the normal image . w)/d(verts) is, per face, its pixel
    count times d(n_f . w)/d(verts): the render adds nothing to the face normal's own derivative."""
    verts, faces = _cube()
    verts = verts.clone().requires_grad_(True)
    views = _views("face")
    w = torch.tensor([0.3, -0.7, 0.5])
    out = render_mesh(raster, verts, faces, views, antialias=False)
    (out.normal * w).sum().backward()
    rendered = verts.grad.clone()
    ids = raster.rasterize(clip_positions(verts.detach(), views.cams.mvp), faces.int(), (96, 96))[..., 3].long() - 1
    counts = torch.bincount(ids[ids >= 0], minlength=faces.shape[0]).float()
    v2 = verts.detach().clone().requires_grad_(True)
    ((face_normals(v2, faces) @ w) * counts).sum().backward()
    # float32 sums over ~10^3 pixels a face: equal to 1e-5 of the largest entry (~2000)
    torch.testing.assert_close(rendered, v2.grad, rtol=1e-4, atol=0.02)
    assert float(v2.grad.abs().max()) > 100  # the comparison is not between two zeros
