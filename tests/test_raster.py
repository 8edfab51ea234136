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


def _scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of a sphere in front of a tilted square: occlusion, silhouettes against the
    background and against a surface behind, and a triangle crossing the camera plane."""
    import trimesh

    from backend.render.camera import orbit_cameras

    sphere = trimesh.creation.icosphere(2, 0.45)
    v = torch.cat([torch.tensor(sphere.vertices, dtype=torch.float32),
                   torch.tensor([[-1.2, -1.0, -0.8], [1.3, -0.9, -0.6], [1.1, 1.2, -0.9], [-1.0, 1.1, -0.7],
                                 [0.0, 0.0, 3.0]])])
    n = len(sphere.vertices)
    f = torch.cat([torch.tensor(sphere.faces), torch.tensor([[n, n + 1, n + 2], [n, n + 2, n + 3],
                                                               [n + 1, n + 2, n + 4]])])
    cams = orbit_cameras(torch.tensor([10.0, -20.0]), torch.tensor([15.0, 200.0]), 2.2, 45.0, 48)
    pos = torch.cat([v, torch.ones(len(v), 1)], -1) @ cams.mvp.transpose(1, 2)
    return pos, f.int()


def test_dense_and_sparse_evaluations_agree_with_their_gradients():
    """CUDA takes the dense evaluation (no host sync a pixel set would need), the CPU the
    sparse one: the same values, and the same gradients to positions, attributes, colours."""
    from backend.render import raster_torch as rt

    pos0, tri = _scene()
    attr0 = torch.rand(pos0.shape[1], 3, generator=torch.Generator().manual_seed(1))
    out, grads = {}, {}
    for dense in (False, True):
        pos, attr = pos0.clone().requires_grad_(True), attr0.clone().requires_grad_(True)
        rast = rt.rasterize(pos, tri, (48, 48), dense=dense)
        color = rt.interpolate(attr, rast, tri, dense=dense)
        aa = rt.antialias(color, rast, pos, tri, dense=dense)
        (aa * torch.linspace(0.5, 1.5, 3)).sum().backward()
        out[dense], grads[dense] = (rast, color, aa), (pos.grad, attr.grad)
    assert (out[False][0][..., 3] > 0).float().mean() > 0.3  # the scene covers the views
    assert (out[False][2] != out[False][1]).any()  # and has silhouettes to antialias
    for sparse, dense in zip(out[False], out[True]):
        assert torch.allclose(sparse, dense, atol=1e-6), (sparse - dense).abs().max()
    for sparse, dense in zip(grads[False], grads[True]):
        assert torch.isfinite(dense).all() and torch.allclose(sparse, dense, atol=1e-5), (sparse - dense).abs().max()


def test_a_material_on_every_pixel_masked_gives_the_gathered_render_and_gradients():
    """On CUDA the material runs on every pixel with the background masked (no count of
    covered pixels for the host to read); the CPU gathers the covered ones: the same image,
    roughness / metallic and material gradients."""
    from backend.render.camera import orbit_cameras
    from backend.render.raster import TorchRasterizer
    from backend.render.shading import fixed_views

    import trimesh

    sphere = trimesh.creation.icosphere(2, 0.5)
    verts, faces = torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces)
    views = fixed_views(orbit_cameras(torch.tensor([10.0, -25.0]), torch.tensor([0.0, 130.0]), 2.0, 45.0, 40), "lambertian")
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5), torch.nn.Sigmoid())
    uv = torch.rand(len(verts), 1)

    def material(x: torch.Tensor, extra: dict) -> torch.Tensor:
        return mlp(torch.cat([x, extra["uv"]], -1))

    out, grads = {}, {}
    for dense in (False, True):
        mlp.zero_grad()
        r = render_mesh(TorchRasterizer(dense=dense), verts, faces, views, material, {"uv": uv})
        (r.image.sum() + r.surface.sum()).backward()
        out[dense], grads[dense] = (r.image, r.albedo, r.surface), [p.grad.clone() for p in mlp.parameters()]
    assert (out[False][2] > 0).float().mean() > 0.2  # the sphere covers the views
    for sparse, dense in zip(out[False], out[True]):
        assert torch.allclose(sparse, dense, atol=1e-6), (sparse - dense).abs().max()
    for sparse, dense in zip(grads[False], grads[True]):
        assert torch.allclose(sparse, dense, rtol=1e-5, atol=1e-6), (sparse - dense).abs().max()
