"""SGC (TV-3DG Eq. 10-13) against its formulas, the camera-space helpers it relies on, and
the SGC model roles (DINO, depth, reward, segmenter) loaded from tiny saved models."""
import pytest
import torch

from backend.guidance.multiview import SGCTargets
from backend.guidance.sgc import SGC, SGC_AZIMUTHS, SGCConfig, grid2x2, pearson
from backend.models.store import ModelStore
from backend.models.tiny import build_tiny
from backend.render.camera import normals_from_depth, orbit_cameras, world_to_camera_dirs
from backend.render.shading import Frame
from backend.models import encoders


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ModelStore:
    return ModelStore(str(build_tiny(tmp_path_factory.mktemp("tiny"), ["dino", "depth", "reward", "segmenter"])))


def test_pearson_ignores_scale_and_shift():
    a = torch.rand(100)
    assert pearson(a, 3 * a + 7).item() == pytest.approx(1.0, abs=1e-5)
    assert pearson(a, -2 * a).item() == pytest.approx(-1.0, abs=1e-5)


def test_normals_from_depth_of_planes():
    flat = normals_from_depth(torch.full((1, 8, 8), 2.0))
    assert torch.allclose(flat, torch.tensor([0.0, 0.0, 1.0]).expand_as(flat))
    # Farther to the right (depth grows with u): the surface faces right, towards the viewer.
    u = torch.linspace(0, 1, 8)[None, None, :].expand(1, 8, 8)
    n = normals_from_depth(u.clone())[0, 4, 4]
    assert n[0] > 0 and n[2] > 0 and abs(n[1]) < 1e-6
    # Farther towards the top of the image (row 0): the surface faces up.
    rows = torch.linspace(1, 0, 8)[None, :, None].expand(1, 8, 8)
    n = normals_from_depth(rows.clone())[0, 4, 4]
    assert n[1] > 0 and n[2] > 0 and abs(n[0]) < 1e-6


def test_world_to_camera_dirs_front_and_right_cameras():
    cams = orbit_cameras(0.0, torch.tensor([0.0, 90.0]), 2.5, 40.0, 4)
    up_and_z = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    world = up_and_z[None, :, None, :].expand(2, 2, 1, 3)  # [B,H=2,W=1,3]
    cam = world_to_camera_dirs(world, cams.c2w)
    # Front camera (on +Z looking at the origin): world +Z is towards it, +Y is up.
    assert torch.allclose(cam[0, 1, 0], torch.tensor([0.0, 0.0, 1.0]), atol=1e-5)
    assert torch.allclose(cam[0, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5)
    # Right camera (on +X): world +Z points to its left.
    assert torch.allclose(cam[1, 1, 0], torch.tensor([-1.0, 0.0, 0.0]), atol=1e-5)


def test_grid_layout():
    views = torch.stack([torch.full((3, 2, 2), float(i)) for i in range(4)])
    g = grid2x2(views)[0, 0]
    assert g.shape == (4, 4)
    assert g[0, 0] == 0 and g[0, 3] == 1 and g[3, 0] == 2 and g[3, 3] == 3


def _targets(res: int = 16) -> tuple[SGCTargets, torch.Tensor]:
    torch.manual_seed(0)
    images = torch.rand(4, res, res, 3)
    mask = torch.zeros(4, res, res)
    mask[:, 3:13, 3:13] = 1
    depth = 2.0 + torch.rand(4, res, res) * 0.5
    normal = torch.nn.functional.normalize(torch.randn(4, res, res, 3), dim=-1)
    return SGCTargets(images, mask, 1.0 / depth, normal), depth


def _cams(res: int = 16):
    return orbit_cameras(0.0, torch.tensor(SGC_AZIMUTHS), 2.5, 40.0, res)


def _cfg(**parts) -> SGCConfig:
    return SGCConfig(**{"reward": 0.0, "semantic": 0.0, "depth": 0.0, "normal": 0.0, **parts})


def test_geometry_parts_are_minus_one_when_renders_match_targets():
    t, depth = _targets()
    cams = _cams()
    # Rendered world normals that, in each camera, equal the target's camera-space normals.
    world = torch.einsum("bij,bhwj->bhwi", cams.c2w[:, :3, :3], t.normal)
    frame = Frame(t.image, t.mask[..., None], (depth * t.mask)[..., None], world)
    out = SGC(t, cams, None, None, _cfg(depth=1.0, normal=2.0))(frame, None, 0, 1)
    assert out["depth"].item() == pytest.approx(-1.0, abs=1e-4)
    assert out["normal"].item() == pytest.approx(-2.0, abs=1e-4)
    assert set(out) == {"depth", "normal"}  # parts with weight 0 are not computed


def test_semantic_is_the_summed_squared_feature_distance_and_reward_the_bounded_map(store):
    t, _ = _targets()
    cams = _cams()
    reward, dino = encoders.reward(store, "a red chair"), encoders.dino(store)
    sgc = SGC(t, cams, reward, dino, _cfg(reward=2.5, semantic=4.0, reward_margin=1e3))
    assert sgc(Frame(t.image, t.mask[..., None]), None, 0, 1)["semantic"].item() == pytest.approx(0.0, abs=1e-8)
    other = torch.rand_like(t.image)
    frame = Frame(other.clone().requires_grad_(), t.mask[..., None])
    out = sgc(frame, None, 0, 1)
    # Eq. 12: ||D(S) - D(M)||^2 summed over the feature dimension, averaged over the 4 views
    f_s, f_m = dino(other.permute(0, 3, 1, 2)), dino(t.image.permute(0, 3, 1, 2))
    assert out["semantic"].item() == pytest.approx(4.0 * ((f_s - f_m) ** 2).sum(-1).mean().item(), rel=1e-5)
    # phi(r) = max(0, margin - r): below the margin it is margin - r ...
    r = reward(grid2x2(other.permute(0, 3, 1, 2))).mean()
    assert out["reward"].item() == pytest.approx(2.5 * (1e3 - r.item()), rel=1e-5)
    out["reward"].backward()
    # ... whose gradient is -2.5 dR/dS
    probe = other.clone().requires_grad_()
    reward(grid2x2(probe.permute(0, 3, 1, 2))).mean().backward()
    assert torch.allclose(frame.image.grad, -2.5 * probe.grad, atol=1e-6)
    # above the margin the loss is 0 and pushes no further
    capped = SGC(t, cams, reward, None, _cfg(reward=2.5, reward_margin=float(r) - 1.0))
    assert capped(Frame(other, t.mask[..., None]), None, 0, 1)["reward"].item() == 0.0


def test_sgc_gradient_moves_rendered_depth_toward_target_correlation():
    t, depth = _targets()
    cams = _cams()
    rendered = (torch.rand(4, 16, 16) + 2.0).requires_grad_()
    sgc = SGC(t, cams, None, None, _cfg(depth=1.0))
    before = sgc(Frame(t.image, t.mask[..., None], (rendered * t.mask)[..., None],
                       torch.zeros(4, 16, 16, 3) + torch.tensor([0.0, 0.0, 1.0])), None, 0, 1)["depth"]
    before.backward()
    with torch.no_grad():
        stepped = rendered - 0.05 * rendered.grad / rendered.grad.abs().max()
    after = sgc(Frame(t.image, t.mask[..., None], (stepped * t.mask)[..., None],
                      torch.zeros(4, 16, 16, 3) + torch.tensor([0.0, 0.0, 1.0])), None, 0, 1)["depth"]
    assert after < before


def test_targets_estimate_depth_and_normals(store):
    images = torch.rand(4, 24, 24, 3)
    masks = torch.ones(4, 24, 24)
    t = SGCTargets.estimate(images, masks, encoders.depth(store))
    assert t.disparity.shape == (4, 24, 24) and t.normal.shape == (4, 24, 24, 3)
    assert torch.allclose(t.normal.norm(dim=-1), torch.ones(4, 24, 24), atol=1e-5)


def test_sgc_roles_load_and_segmenter_gives_probabilities(store):
    x = torch.rand(2, 3, 40, 40)
    assert encoders.dino(store)(x).shape == (2, 32)
    assert encoders.depth(store)(x).dim() == 3
    assert encoders.reward(store, "a chair")(x).shape == (2,)
    seg = encoders.segmenter(store, "a chair")(torch.rand(30, 50, 3))
    assert seg.shape == (30, 50) and 0 <= seg.min() and seg.max() <= 1


def test_park_moves_models_off_the_device_and_back(store):
    fresh = ModelStore(store.source)
    encode = encoders.dino(fresh)
    model = fresh.get("dino")
    fresh.device, fresh.offload = torch.device("meta"), True  # stands for the GPU
    fresh.park()
    assert next(model.parameters()).device.type == "cpu" and "dino" not in fresh.loaded_on_device()
    # An encoder handed out before the park brings its model back to "the GPU" when called.
    assert encode(torch.rand(1, 3, 32, 32)).device.type == "meta"
    assert next(model.parameters()).device.type == "meta" and "dino" in fresh.loaded_on_device()


def test_downloads_only_when_allowed():
    assert ModelStore("default")._kwargs("some/hub-id")["local_files_only"] is True
    assert ModelStore("default", allow_download=True)._kwargs("some/hub-id")["local_files_only"] is False


def _gathered_geometry_terms(t: SGCTargets, cams, frame: Frame) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition as a loop over views, gathering each view's covered pixels (what the
    masked form replaced; the host read each view's count)."""
    x = frame.image.permute(0, 3, 1, 2)
    both = (t.mask > 0.5) & (frame.opacity[..., 0] > 0.5) & (frame.depth[..., 0] > 0)
    n_cam = world_to_camera_dirs(frame.normal, cams.c2w)
    depth_terms, normal_terms = [], []
    for v in range(x.shape[0]):
        m = both[v]
        if m.sum() < 16:
            continue
        a, b = t.disparity[v][m], 1.0 / frame.depth[v, ..., 0][m]
        a, b = a - a.mean(), b - b.mean()
        depth_terms.append(-(a * b).sum() / (a.norm() * b.norm()).clamp(min=1e-8))
        normal_terms.append(-torch.nn.functional.cosine_similarity(n_cam[v][m], t.normal[v][m], dim=-1).mean())
    zero = x.sum() * 0
    return (torch.stack(depth_terms).mean() if depth_terms else zero,
            torch.stack(normal_terms).mean() if normal_terms else zero)


@pytest.mark.parametrize("covered_views", [4, 2, 0])
def test_masked_geometry_terms_equal_the_gathered_definition_with_gradients(covered_views):
    """Masks instead of gathers (no host read of each view's count): values and gradients
    as the per-view loop gives them, a view covering fewer than 16 pixels left out."""
    t, depth = _targets()
    cams = _cams()
    g = torch.Generator().manual_seed(3)
    opacity = t.mask.clone()
    opacity[covered_views:, :, :] = 0  # views past covered_views see nothing
    opacity[:, 5:7, 5:7] = 0
    grads = []
    values = []
    for fn in ("masked", "gathered"):
        d = (depth * (1 + 0.1 * torch.rand(depth.shape, generator=torch.Generator().manual_seed(4)))).requires_grad_(True)
        n = torch.nn.functional.normalize(torch.randn(4, 16, 16, 3, generator=g), dim=-1).requires_grad_(True)
        g.manual_seed(3)
        frame = Frame(t.image, opacity[..., None], (d * t.mask)[..., None], n)
        if fn == "masked":
            out = SGC(t, cams, None, None, _cfg(depth=1.0, normal=1.0))(frame, None, 0, 1)
            dep, nor = out["depth"], out["normal"]
        else:
            dep, nor = _gathered_geometry_terms(t, cams, frame)
        total = dep + 0.5 * nor
        if total.requires_grad:  # the loop's zero for no usable view has no graph
            total.backward()
        values.append((dep.detach(), nor.detach()))
        grads.append(tuple(torch.zeros_like(p) if p.grad is None else p.grad for p in (d, n)))
    assert torch.allclose(values[0][0], values[1][0], atol=1e-6) and torch.allclose(values[0][1], values[1][1], atol=1e-6)
    for a, b in zip(*grads):
        assert torch.isfinite(a).all() and torch.allclose(a, b, atol=1e-7, rtol=1e-5)
    if covered_views == 0:
        assert values[0] == (0.0, 0.0)
