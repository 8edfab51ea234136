import torch

from backend.render.camera import orbit_cameras
from backend.render.mesh_renderer import render_mesh
from backend.render.shading import fixed_views

SQUARE_TRI = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)


def square(half: torch.Tensor | float, z: float = 0.0) -> torch.Tensor:
    h = torch.as_tensor(half, dtype=torch.float32)
    xy = torch.stack([torch.stack([-h, -h]), torch.stack([h, -h]), torch.stack([h, h]), torch.stack([-h, h])])
    return torch.cat([xy, torch.full((4, 1), z), torch.ones(4, 1)], dim=-1)[None]


def test_coverage_matches_analytic_area(raster):
    # A square of half-size 0.5 in NDC on a 64x64 image covers exactly 32x32 pixel centres.
    rast = raster.rasterize(square(0.5), SQUARE_TRI, (64, 64))
    assert int((rast[..., 3] > 0).sum()) == 32 * 32
    ys, xs = torch.nonzero(rast[0, ..., 3] > 0, as_tuple=True)
    assert int(ys.min()) == 16 and int(xs.max()) == 47


def test_depth_test_keeps_nearest(raster):
    pos = torch.cat([square(0.5, z=0.5), square(0.3, z=-0.5)], dim=1)
    tri = torch.cat([SQUARE_TRI, SQUARE_TRI + 4])
    rast = raster.rasterize(pos, tri, (32, 32))
    centre = int(rast[0, 16, 16, 3]) - 1
    assert centre in (2, 3)  # the nearer (z = -0.5) square wins in the middle
    assert int(rast[0, 8, 8, 3]) - 1 in (0, 1)  # outside the small square: the far one


def test_barycentrics_interpolate_linear_attribute(raster):
    pos = square(0.8)
    attr = pos[0, :, :2].clone()  # interpolating NDC xy must give the pixel centre
    rast = raster.rasterize(pos, SQUARE_TRI, (16, 16))
    out = raster.interpolate(attr, rast, SQUARE_TRI)
    from backend.render.camera import pixel_centers_ndc

    mask = rast[0, ..., 3] > 0
    assert torch.allclose(out[0][mask], pixel_centers_ndc(16, 16)[mask], atol=1e-5)


def test_perspective_correct_interpolation(raster):
    # A floor plane seen in perspective: interpolated world z must equal the ray hit.
    cams = orbit_cameras(30.0, 0.0, 2.0, 60.0, 24)
    verts = torch.tensor([[-1.0, 0, -1], [1.0, 0, -1], [1.0, 0, 1], [-1.0, 0, 1]])
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])
    out = render_mesh(raster, verts, faces, fixed_views(cams), antialias=False)
    from backend.render.camera import camera_rays

    o, d = camera_rays(cams)
    t = -o[..., 1] / d[..., 1]
    hit = o + d * t[..., None]
    m = out.mask[..., 0] > 0
    assert m.sum() > 100
    assert torch.allclose(out.xyz[m], hit[m], atol=1e-4)


def test_interpolate_gradient_matches_finite_differences(raster):
    pos = torch.tensor([[[-0.7, -0.6, 0.1, 1.0], [0.8, -0.5, 0.2, 1.3], [0.1, 0.7, 0.0, 0.9]]], dtype=torch.float64)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    attr = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    weights = torch.randn(1, 12, 12, 2, dtype=torch.float64)

    def f(p: torch.Tensor) -> torch.Tensor:
        rast = raster.rasterize(p, tri, (12, 12))
        return (raster.interpolate(attr, rast, tri) * weights).sum()

    p = pos.clone().requires_grad_(True)
    f(p).backward()
    eps = 1e-6
    for idx in [(0, 1, 0), (0, 2, 1), (0, 1, 3)]:
        d = torch.zeros_like(pos)
        d[idx] = eps
        fd = (f(pos + d) - f(pos - d)) / (2 * eps)
        assert torch.allclose(p.grad[idx], fd, rtol=1e-4, atol=1e-7), idx


def test_antialias_silhouette_gradient_tracks_area(raster):
    # White square on black: d(image sum)/d(half-size) ~ d(area in pixels)/d(half) = 2 * 2h * (W/2)^2 * 2
    res = 64
    half = torch.tensor(0.41, requires_grad=True)
    pos = square(half)
    rast = raster.rasterize(pos, SQUARE_TRI, (res, res))
    color = (rast[..., 3:4] > 0).float()
    aa = raster.antialias(color, rast, pos, SQUARE_TRI)
    aa.sum().backward()
    analytic = 8 * float(half.detach()) * (res / 2) ** 2
    assert abs(float(half.grad) - analytic) / analytic < 0.1
    # and the antialiased area is close to the true area
    true_area = (2 * float(half.detach()) * res / 2) ** 2
    assert abs(float(aa.sum().detach()) - true_area) / true_area < 0.02


def test_texture_lookup_uses_gltf_v_down(raster):
    tex = torch.zeros(1, 4, 4, 3)
    tex[0, 0, :, 0] = 1.0  # top row red
    uv = torch.tensor([[[[0.5, 0.05]], [[0.5, 0.95]]]]).reshape(1, 2, 1, 2)
    out = raster.texture(tex, uv)
    assert out[0, 0, 0, 0] > 0.9 and out[0, 1, 0, 0] < 0.1
