"""Each guidance loss against its paper's formula on the conditional oracle, whose branches
have closed forms (guidance/oracle.py): ε = √(1-ᾱ)(z_t - √ᾱ m)/(ᾱ s² + 1 - ᾱ) for Gaussian
data N(m, s²) around the target render x* (conditional), its flat mean colour
(unconditional) and x* blurred (PAG's perturbed branch). The random draws (timesteps,
noise) are replayed from the loss's seed; the expected gradients are written out here,
not taken from the code under test."""
import math

import pytest
import torch
import trimesh

from backend.geometry.mesh import Mesh, normalized
from backend.guidance.base import SDS, TimestepSchedule, ddpm_alphas_cumprod, sds_weight
from backend.guidance.cds import CDS, CDSConfig
from backend.guidance.csm import CSM, CSMConfig, WindowSchedule
from backend.guidance.oracle import OracleDenoiser
from backend.guidance.vpcsm import VPCSM, VPCSMConfig
from backend.render.camera import orbit_cameras
from backend.render.shading import Frame, fixed_views

AC = ddpm_alphas_cumprod()


@pytest.fixture(scope="module")
def oracle():
    from backend.render.raster import TorchRasterizer

    box = trimesh.creation.box([1.0, 0.6, 0.8])
    v = torch.tensor(box.vertices, dtype=torch.float32)
    target = normalized(Mesh(v, torch.tensor(box.faces), colors=(v > 0).float()))[0]
    return OracleDenoiser(target, TorchRasterizer(), sigma_cond=0.2, sigma_uncond=1.0)


@pytest.fixture(scope="module")
def views():
    return fixed_views(orbit_cameras(20.0, torch.tensor([30.0, 200.0]), 2.5, 40.0, 16))


def _eps(z_t: torch.Tensor, t: int, mean: torch.Tensor, s: float) -> torch.Tensor:
    a = float(AC[t])
    return math.sqrt(1 - a) * (z_t - math.sqrt(a) * mean) / (a * s * s + 1 - a)


def _means(oracle: OracleDenoiser, views) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x_star = oracle.target_images(views).permute(0, 3, 1, 2) * 2 - 1
    flat = x_star.mean(dim=(2, 3), keepdim=True).expand_as(x_star)
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x_star, (2,) * 4, mode="replicate"), 5, 1)
    return x_star, flat, blurred


def _frame(x: torch.Tensor) -> Frame:
    return Frame(x, torch.ones_like(x[..., :1]))


def _image_grad(grad_z: torch.Tensor) -> torch.Tensor:
    """The render's gradient [B,H,W,3] for a latent gradient [B,3,H,W] injected as the
    per-sample mean (/ B) through z = 2x - 1."""
    return (2 * grad_z / grad_z.shape[0]).permute(0, 2, 3, 1)


def test_gaussian_branch_is_the_posterior_mean_of_the_noise():
    # Monte Carlo: x0 ~ N(m, s^2), z_t = √ᾱ x0 + √(1-ᾱ) ε; regress ε on z_t.
    from backend.guidance.oracle import gaussian_eps

    g = torch.Generator().manual_seed(0)
    m, s, a = 0.3, 0.4, torch.tensor(0.6)
    x0 = m + s * torch.randn(400_000, generator=g)
    eps = torch.randn(400_000, generator=g)
    z = a.sqrt() * x0 + (1 - a).sqrt() * eps
    slope = ((z - z.mean()) * (eps - eps.mean())).mean() / z.var()
    predicted = gaussian_eps(z, a, torch.tensor(m), s)
    fit = slope * (z - z.mean()) + eps.mean()
    assert (predicted - fit).abs().max() < 0.01


def test_sds_with_cfg_and_image_term_is_eq5(oracle, views):
    """grad_z = w(t)(ε_u + g(ε_c - ε_u) - ε) and grad_x = w(t) ω_img (√ᾱ/√(1-ᾱ)) (x - x̂):
    XBind Eq. 5 (written for x0, where z - ẑ = (√(1-ᾱ)/√ᾱ)(ε̂ - ε)) in ε form, as threestudio's
    compute_grad_sds writes it (grad_img = w (image - image_denoised) alpha / sigma)."""
    g_scale, omega = 7.5, 0.3
    sds = SDS(oracle.with_scale(g_scale), TimestepSchedule(0.2, 0.8), "sds", omega, 11)
    x = torch.rand(2, 16, 16, 3, requires_grad=True)
    out = sds(_frame(x), views, 0, 10)
    gen = torch.Generator().manual_seed(11)
    t = TimestepSchedule(0.2, 0.8).sample(2, 0, 10, 1000, gen)
    noise = torch.randn((2, 3, 16, 16), generator=gen)
    x_star, flat, _ = _means(oracle, views)
    z = x.detach().permute(0, 3, 1, 2) * 2 - 1
    grads_z, grads_x = [], []
    for i in range(2):
        ti, a = int(t[i]), float(AC[t[i]])
        z_t = math.sqrt(a) * z[i] + math.sqrt(1 - a) * noise[i]
        e_u, e_c = _eps(z_t, ti, flat[i], 1.0), _eps(z_t, ti, x_star[i], 0.2)
        e_hat = e_u + g_scale * (e_c - e_u)
        w = 1 - a
        grads_z.append(w * (e_hat - noise[i]))
        x_hat = ((z_t - math.sqrt(1 - a) * e_hat) / math.sqrt(a) + 1) / 2
        grads_x.append(w * omega * math.sqrt(a / (1 - a)) * (x.detach().permute(0, 3, 1, 2)[i] - x_hat.clamp(0, 1)))
    gz, gx = torch.stack(grads_z), torch.stack(grads_x)
    out["sds"].backward(retain_graph=True)
    assert torch.allclose(x.grad, _image_grad(gz), atol=1e-5)
    x.grad = None
    out["sds_image"].backward()
    assert torch.allclose(x.grad, (gx / 2).permute(0, 2, 3, 1), atol=1e-5)


@pytest.mark.parametrize("clip", [None, 0.002])
def test_cds_is_eq3_with_lambda_at_t1(oracle, views, clip):
    """With Gaussian data of spread s the Euler step has a closed form (VE coordinates, σ_t):
    ε1 - ε2 = (z - x* + σ1 ε*) s² (σ1 - σ2) / ((s² + σ1²)(s² + σ2²)), weighted w(t1) as
    Consistent3D's compute_grad_consistency weights it, one ε* for both views, each view its
    own gap, then clamped elementwise to ±grad_clip. At CFG scale 1: the conditional branch."""
    schedule = TimestepSchedule(0.02, 0.3)
    cfg = CDSConfig(guidance_scale=(1.0, 1.0), grad_clip=None if clip is None else (clip, clip))
    cds = CDS(oracle, cfg, schedule, "sds", 5)
    x = torch.rand(2, 16, 16, 3, requires_grad=True)
    cds(_frame(x), views, 3, 12)["cds"].backward()
    gen = torch.Generator().manual_seed(5)
    gaps = torch.randint(100, 200, (2,), generator=gen).tolist()
    fixed = torch.randn((1, 3, 16, 16), generator=gen)
    t2 = int(300 + (20 - 300) * math.sqrt(3 / 12))
    sig = lambda t: math.sqrt((1 - float(AC[t])) / float(AC[t]))  # noqa: E731
    x_star, _, _ = _means(oracle, views)
    d = x.detach().permute(0, 3, 1, 2) * 2 - 1 - x_star
    expected = []
    for i, gap in enumerate(gaps):
        s1, s2, s = sig(t2 + gap), sig(t2), 0.2
        delta = (d[i] + s1 * fixed[0]) * s * s * (s1 - s2) / ((s * s + s1 * s1) * (s * s + s2 * s2))
        expected.append((1 - float(AC[t2 + gap])) * delta)  # w(t1), the "sds" weighting 1 - ᾱ
    grad = torch.stack(expected)
    if clip is not None:
        assert grad.abs().max() > clip  # the clamp is met
        grad = grad.clamp(-clip, clip)
    assert torch.allclose(x.grad, _image_grad(grad), atol=1e-5)


def test_cds_vanishes_on_a_single_image(views):
    """σ_c = 0 in the closed form above: one image's ODE is a straight line, both ends of
    the step predict the same noise (why oracle runs stand SDS in for CDS)."""
    from backend.render.raster import TorchRasterizer

    point = OracleDenoiser(_box(), TorchRasterizer(), sigma_cond=0.0)
    x = torch.rand(2, 16, 16, 3, requires_grad=True)
    cfg = CDSConfig(guidance_scale=(1.0, 1.0))
    CDS(point, cfg, TimestepSchedule(0.02, 0.3), "sds", 1)(_frame(x), views, 2, 10)["cds"].backward()
    assert x.grad.abs().max() < 1e-5


def test_cds_anneals_t2_over_the_phase_window(oracle):
    """Consistent3D's refine stage (cur_steps [0, 300, 20, 3000], anneal_t's square root, int()):
    t2 = int(300 - 280 √(step/N)); t2 at most max_t T - gap_lo, t1 = t2 + gap at most max_t T."""
    cds = CDS(oracle, CDSConfig(gap=(100, 101)), TimestepSchedule(0.02, 0.3), "sds", 0)
    for step, (t1, t2) in ((0, (400, 300)), (25, (260, 160)), (30, (246, 146)), (100, (120, 20))):
        assert [x.tolist() for x in cds.timesteps(2, step, 100)] == [[t1, t1], [t2, t2]]
    near_top = CDS(oracle, CDSConfig(gap=(100, 200)), TimestepSchedule(0.02, 0.48), "sds", 0)
    t1, t2 = near_top.timesteps(64, 0, 100)
    assert set(t2.tolist()) == {400} and t1.max() == 500 and t1.min() >= 500


def _single_step_inversion(z: torch.Tensor, t: int, flat: torch.Tensor) -> torch.Tensor:
    """DDIM inversion from s = 0 to t in one step (t <= δt) with the unconditional branch."""
    a0, at = float(AC[0]), float(AC[t])
    e = _eps(z, 0, flat, 1.0)
    x0 = (z - math.sqrt(1 - a0) * e) / math.sqrt(a0)
    return math.sqrt(at) * x0 + math.sqrt(1 - at) * e


def _inverted_run(loss, oracle, views, seed: int) -> tuple[torch.Tensor, int, tuple, torch.Tensor]:  # noqa: ANN001
    """Runs a CSM-family loss (δt > t: one inversion step) on random renders; -> (the
    renders' gradient, the replayed t, the branch means, the inverted latent)."""
    x = torch.rand(2, 16, 16, 3, requires_grad=True)
    loss(_frame(x), views, 0, 9)["csm"].backward()
    t = int(WindowSchedule().sample(1, 0, 9, 1000, torch.Generator().manual_seed(seed))[0])
    means = _means(oracle, views)
    return x.grad, t, means, _single_step_inversion(x.detach().permute(0, 3, 1, 2) * 2 - 1, t, means[1])


def test_csm_is_the_cfg_direction_at_the_ddim_inverted_latent(oracle, views):
    """TV-3DG Eq. 9: grad_z = w(t) λ (ε_c - ε_u)(x_t^inv), x_t^inv by DDIM inversion with ε_u."""
    csm = CSM(oracle, CSMConfig(scale=7.5, delta_t=1000), "sds", 3)
    grad, t, (x_star, flat, _), z_inv = _inverted_run(csm, oracle, views, 3)
    expected = (1 - float(AC[t])) * 7.5 * (_eps(z_inv, t, x_star, 0.2) - _eps(z_inv, t, flat, 1.0))
    assert torch.allclose(grad, _image_grad(expected), atol=1e-5)


def test_vpcsm_adds_the_pag_direction(oracle, views):
    """TV-3DG Eq. 15-18: grad_z = w(t)[λ(ε_c - ε_u) + s(ε_c - ε_PAG)] at the inverted latent;
    on the oracle the visual prompt's branch is the conditional one and PAG's aims at x* blurred."""
    vpcsm = VPCSM(oracle, VPCSMConfig(scale=5.0, pag_scale=2.0, delta_t=1000), "sds", 4)
    grad, t, (x_star, flat, blurred), z_inv = _inverted_run(vpcsm, oracle, views, 4)
    e_c = _eps(z_inv, t, x_star, 0.2)
    cfg_part, pag_part = e_c - _eps(z_inv, t, flat, 1.0), e_c - _eps(z_inv, t, blurred, 0.2)
    expected = (1 - float(AC[t])) * (5.0 * cfg_part + 2.0 * pag_part)
    assert torch.allclose(grad, _image_grad(expected), atol=1e-5)


def test_vpcsm_sees_front_right_back_left_in_the_texture_phase(tmp_path, raster):
    from backend.pipeline.config import resolve
    from backend.pipeline.guidance_terms import build_terms

    cfg = resolve("draft", mode="stylize").phase3
    (term,) = build_terms("phase3", cfg, "oracle", raster, 0, print, oracle_target=_box())
    cams = term.guidance.cameras
    eye = torch.nn.functional.normalize(cams.c2w[:, :3, 3], dim=-1)
    el = math.radians((cfg.cameras.elevation[0] + cfg.cameras.elevation[1]) / 2)
    front, right = [0.0, math.sin(el), math.cos(el)], [math.cos(el), math.sin(el), 0.0]
    back, left = [0.0, math.sin(el), -math.cos(el)], [-math.cos(el), math.sin(el), 0.0]
    assert torch.allclose(eye, torch.tensor([front, right, back, left]), atol=1e-5)
    assert int(cams.width) == int(cfg.resolution)


def _box() -> Mesh:
    box = trimesh.creation.box([1.0, 0.6, 0.8])
    v = torch.tensor(box.vertices, dtype=torch.float32)
    return normalized(Mesh(v, torch.tensor(box.faces), colors=(v > 0).float()))[0]


def test_sds_weightings_at_known_points():
    """Stable Diffusion's schedule and the weightings at t = 100, 500, 900, the numbers
    diffusers' DDPMScheduler(scaled_linear, 0.00085 .. 0.012) gives for ᾱ_t (0.89422,
    0.27633, 0.01415), and threestudio's weighting strategies of them: "sds" 1 - ᾱ (0.10578,
    0.72367, 0.98585), "fantasia3d" √ᾱ (1 - ᾱ) (0.10003, 0.38041, 0.11728), "uniform" 1."""
    t = torch.tensor([100, 500, 900])
    assert torch.allclose(AC[t], torch.tensor([0.894223, 0.276332, 0.014151]), atol=2e-6)
    assert torch.allclose(sds_weight(AC, t, "sds"), torch.tensor([0.105777, 0.723668, 0.985849]), atol=2e-6)
    assert torch.allclose(sds_weight(AC, t, "fantasia"), torch.tensor([0.100026, 0.380413, 0.117275]), atol=2e-6)
    assert torch.equal(sds_weight(AC, t, "uniform"), torch.ones(3))
