import torch

from backend.guidance.ms import MSConfig, MSLoss, random_crop, random_perspective
from backend.render.shading import Frame
from backend.models.store import ModelStore
from backend.models.tiny import build_tiny
from backend.models.encoders import clip_image_encoder


def test_perspective_with_zero_distortion_is_identity():
    x = torch.rand(2, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(random_perspective(x, 0.0, g), x, atol=1e-5)
    assert not torch.allclose(random_perspective(x, 0.4, g), x, atol=1e-3)
    assert random_crop(x, (0.5, 0.9), 8, g).shape == (2, 3, 8, 8)


def _frame(images: torch.Tensor) -> Frame:
    return Frame(images, torch.ones_like(images[..., :1]))


def test_ms_loss_zero_for_identical_embedding_and_scale_invariant():
    target = torch.randn(16)
    encoder = lambda x: target.expand(x.shape[0], -1) * 3.0  # noqa: E731 (renders already match C_m)
    images = torch.rand(2, 32, 32, 3)
    assert MSLoss(encoder, target, MSConfig(), 0)(_frame(images), None, 0, 1)["ms"].abs() < 1e-6
    other = lambda x: x.mean(dim=(2, 3)).repeat(1, 6)[:, :16]  # noqa: E731
    a = MSLoss(other, target, MSConfig(), 1)(_frame(images), None, 0, 1)["ms"]
    b = MSLoss(other, target * 10, MSConfig(), 1)(_frame(images), None, 0, 1)["ms"]
    assert torch.allclose(a, b) and a > 0


def test_ms_loss_is_eq2_over_n_augmentations():
    """L = ω_g Σ_i W_i E[1 - cos(C_m, E(G_i x))] + ω_l Σ_i W_i E[1 - cos(C_m, E(L_i x))]
    + ω_z Σ_i W_i E[1 - cos(C_m, E(Z x))], replayed with the loss's own draws."""
    torch.manual_seed(0)
    proj = torch.randn(3 * 8 * 8, 16)
    encoder = lambda x: torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1) @ proj  # noqa: E731
    target = torch.randn(16)
    images = torch.rand(3, 32, 32, 3)
    cfg = MSConfig(omega_g=0.5, omega_l=2.0, omega_z=0.25, aug_weights=(0.7, 0.2, 0.1))
    got = MSLoss(encoder, target, cfg, 9)(_frame(images), None, 0, 1)["ms"]
    x = images.permute(0, 3, 1, 2)
    gen = torch.Generator().manual_seed(9)
    unit = torch.nn.functional.normalize(target, dim=0)
    e = lambda y: (1 - torch.nn.functional.normalize(encoder(y), dim=-1) @ unit).mean()  # noqa: E731
    expected = 0.25 * sum(cfg.aug_weights) * e(x)
    for w in cfg.aug_weights:
        expected = expected + 0.5 * w * e(random_perspective(x, 0.5, gen))
        crop = random_crop(x, (0.5, 0.9), 32, gen)  # at the render's size
        expected = expected + 2.0 * w * e(random_perspective(crop, 0.5, gen))
    assert torch.allclose(got, expected, atol=1e-5)


def test_ms_loss_on_tiny_clip_has_the_cosine_gradient(tmp_path):
    build_tiny(tmp_path, ["clip"])
    encode = clip_image_encoder(ModelStore(str(tmp_path)))
    images = torch.rand(2, 48, 48, 3, requires_grad=True)  # larger than the tower's 32²: its processor resizes
    target = torch.randn(1024)
    cfg = MSConfig(omega_g=0.0, omega_l=0.0)  # Z only: deterministic, so the gradient has a closed form
    MSLoss(encode, target, cfg, 0)(_frame(images), None, 0, 1)["ms"].backward()
    probe = images.detach().clone().requires_grad_()
    emb = torch.nn.functional.normalize(encode(probe.permute(0, 3, 1, 2)).float(), dim=-1)
    (1 - emb @ torch.nn.functional.normalize(target, dim=0)).mean().backward()
    assert torch.allclose(images.grad, probe.grad, atol=1e-6) and probe.grad.abs().max() > 0


def test_ms_loss_without_recompute_keeps_the_vit_activations_for_the_same_gradient(tmp_path):
    """recompute: false gives the identical loss and input gradient, and leaves the
    encoder's activations saved for backward (the Tracker's live bytes after forward)
    instead of only its input."""
    from backend.perf.tracker import Tracker

    build_tiny(tmp_path, ["clip"])
    encode = clip_image_encoder(ModelStore(str(tmp_path)))
    images = torch.rand(2, 32, 32, 3)
    target = torch.randn(1024)
    out = {}
    for recompute in (True, False):
        x = images.clone().requires_grad_()
        with Tracker() as tracker:
            loss = MSLoss(encode, target, MSConfig(recompute=recompute), 3)(_frame(x), None, 0, 1)["ms"]
            live = tracker.current
        loss.backward()
        out[recompute] = (loss.detach(), x.grad, live)
    (l_ck, g_ck, live_ck), (l_keep, g_keep, live_keep) = out[True], out[False]
    assert torch.equal(l_ck, l_keep) and torch.allclose(g_ck, g_keep, atol=1e-6)
    assert live_keep > 2 * live_ck


def test_ref_view_zero_at_the_reference_and_pulls_towards_it(raster):
    import trimesh

    from backend.geometry.mesh import Mesh, normalized
    from backend.render.mesh_material import render_target
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
    off = ref(grey, out.mask, views)["rgb"]
    # only antialiased silhouette pixels differ from the binary mask composite
    assert same["rgb"] < 0.05 * off.detach() and same["mask"] < 0.01
    off.backward()
    inside = out.mask[0, ..., 0] > 0
    target_rgb = rgba[..., :3]
    assert ((grey.grad[0][inside] * (0.5 - target_rgb[inside])).sum()) > 0  # descent moves towards x_r
