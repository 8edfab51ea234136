import torch

from backend.guidance.ms import MSLoss, random_crop, random_perspective
from backend.models.registry import ModelStore
from backend.models.tiny import build_tiny


def test_perspective_with_zero_distortion_is_identity():
    x = torch.rand(2, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(random_perspective(x, 0.0, g), x, atol=1e-5)
    assert not torch.allclose(random_perspective(x, 0.4, g), x, atol=1e-3)
    assert random_crop(x, (0.5, 0.9), 8, g).shape == (2, 3, 8, 8)


def test_ms_loss_zero_for_identical_embedding_and_scale_invariant():
    target = torch.randn(16)
    encoder = lambda x: target.expand(x.shape[0], -1) * 3.0  # noqa: E731 (renders already match C_m)
    images = torch.rand(2, 32, 32, 3)
    assert MSLoss(encoder, target, 32)(images, None, 0, 1)["ms"].abs() < 1e-6
    other = lambda x: x.mean(dim=(2, 3)).repeat(1, 6)[:, :16]  # noqa: E731
    a = MSLoss(other, target, 32, seed=1)(images, None, 0, 1)["ms"]
    b = MSLoss(other, target * 10, 32, seed=1)(images, None, 0, 1)["ms"]
    assert torch.allclose(a, b) and a > 0


def test_ms_loss_on_tiny_clip_reaches_the_renders(tmp_path):
    build_tiny(tmp_path, ["clip"])
    encode, size = ModelStore(str(tmp_path)).clip_image_encoder()
    images = torch.rand(2, 48, 48, 3, requires_grad=True)
    loss = MSLoss(encode, torch.randn(32), size)(images, None, 0, 1)["ms"]
    loss.backward()
    assert images.grad.abs().sum() > 0


def test_ref_view_zero_at_the_reference_and_pulls_towards_it(raster):
    import trimesh

    from backend.geometry.mesh import Mesh, normalized
    from backend.guidance.oracle import render_target
    from backend.guidance.ref_view import RefView
    from backend.render.mesh_renderer import render_mesh

    box = trimesh.creation.box([1.0, 0.7, 0.5])
    v = torch.tensor(box.vertices, dtype=torch.float32)
    target = normalized(Mesh(v, torch.tensor(box.faces), colors=(v > 0).float()))[0]
    probe = RefView(torch.zeros(32, 32, 4), elevation=10.0, azimuth=20.0)
    views = probe.views()
    out = render_mesh(raster, target.verts, target.faces, views, antialias=False)
    rgba = torch.cat([render_target(raster, target, views)[0], out.mask[0]], -1)
    ref = RefView(rgba, elevation=10.0, azimuth=20.0)
    same = ref(render_target(raster, target, views), out.mask, views)
    grey = torch.full((1, 32, 32, 3), 0.5, requires_grad=True)
    off = ref(grey, out.mask, views)["ref_rgb"]
    # only antialiased silhouette pixels differ from the binary mask composite
    assert same["ref_rgb"] < 0.05 * off.detach() and same["ref_mask"] < 0.01
    off.backward()
    inside = out.mask[0, ..., 0] > 0
    target_rgb = rgba[..., :3]
    assert ((grey.grad[0][inside] * (0.5 - target_rgb[inside])).sum()) > 0  # descent moves towards x_r
