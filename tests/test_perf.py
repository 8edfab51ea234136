"""The estimator's accounting (tracker), its time model, and the memory changes it led to,
each against a known answer or the computation it replaces."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from backend.geometry.dmtet import DMTet
from backend.geometry.fields import FieldConfig, NeRFField
from backend.guidance.ref_view import RefView
from backend.perf.estimate import CALIBRATION, estimate, seconds_per_it
from backend.perf.tracker import OUTSIDE, Tracker
from backend.render import volume

from .helpers import ROOT as REPO


def test_tracker_counts_live_bytes_peak_and_labels():
    lin = torch.nn.Linear(8, 4, bias=False)
    tr = Tracker()
    tr.label_modules({"lin": lin})
    with tr:
        a = torch.ones(1000)          # 4000 B live
        b = a * 2                     # 8000
        del a                         # 4000
        c = torch.ones(3000)          # 16000: the peak
        del b, c                      # 0
        y = lin(torch.ones(5, 8))     # input 160 B outside, output 80 B inside "lin"
    assert tr.peak == 16000
    assert tr.peak_by_label == {OUTSIDE: 16000}
    assert tr.by_label["lin"] == 80 and tr.by_label[OUTSIDE] == 160  # y, and its input saved for backward
    assert tr.flops == 2 * 5 * 8 * 4  # torch's formula for the one matmul
    del y


def test_tracker_counts_kernels_not_metadata_queries_views_or_aliases():
    """A batched matmul (mm, then an alias back to 3-D) and a scaled reshape on fake
    tensors are two kernels; the `.device` reads, which fake tensors dispatch as
    prim.device, are none (they were 77% of standard's count before)."""
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake:
        x, w = torch.empty(5, 3, 8), torch.empty(8, 4)
    tr = Tracker()
    with tr:
        y = x @ w
        assert y.device == x.device == torch.device("cpu")
        z = (y * 2).reshape(15, 4)
    assert tr.launches == 2 and z.shape == (15, 4)
    assert tr.bytes_moved == (5 * 3 * 8 + 8 * 4 + 15 * 4) * 4 + 2 * 15 * 4 * 4  # mm in/out, mul in/out


@pytest.mark.parametrize("n", [100, 1000])
def test_tracker_counts_the_fused_hash_grid_as_one_launch_that_moves_the_rows_it_touches(n):
    """On fake tensors (how the estimator models a CUDA run) the grid takes its fused ops:
    the encoding is one launch reading the points and the 8 corner rows of every level
    (at most the whole table: shared corners come from the cache), writing the features.
    Known answer from the shapes: 100 points touch less than the table, 1000 more."""
    from backend.geometry.hashgrid import HashGrid

    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake:
        grid = HashGrid(levels=4, features=2, log2_table=12, base_res=4, max_res=64)
        x = torch.empty(n, 3)
    tr = Tracker()
    with tr:
        h = grid(x)
    levels, features = 4, 2
    assert tr.launches == 1 and h.shape == (n, levels * features)
    touched, table = n * levels * 8 * features * 4, grid.embeddings.nbytes
    assert (touched < table) == (n == 100)
    buffers = grid.res_i32.nbytes + grid.offsets.nbytes
    assert tr.bytes_moved == n * 3 * 4 + buffers + n * levels * features * 4 + min(touched, table)


def test_tracker_counts_host_syncs():
    """A boolean-mask selection, a nonzero, a scalar read and a masked write each make the
    host wait for the device; arithmetic and integer indexing do not. Fake or real alike."""
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake:
        xf, mf = torch.empty(10, 3), torch.empty(10, dtype=torch.bool)
    for x, mask in ((torch.rand(10, 3), torch.rand(10) > 0.5), (xf, mf)):
        tr = Tracker()
        with tr:
            y = x[mask] * 2                       # 1
            torch.nonzero(mask)                   # 2
            float(x.sum())                        # 3
            x[torch.tensor([0, 2])] + y.sum()     # integer indexing: none
            x.clone()[mask] = 0.0                 # 4: index_put with a mask
        assert tr.syncs == 4


def test_tracker_worst_case_for_fake_masks_and_exact_for_real_ones():
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake:
        x = torch.empty(10, 3)
        mask = torch.empty(10, dtype=torch.bool)
    real_mask = torch.tensor([True, False] * 5)
    with Tracker():
        assert x[mask].shape == (10, 3)              # a fake mask selects everything
        assert torch.nonzero(mask).shape == (10, 1)
        assert x[real_mask].shape == (5, 3)          # a real mask selects what it says
        assert bool(mask.any()) is True and int(mask.sum()) == 0


def test_time_model_reproduces_the_standard_h100_points_it_was_fitted_to():
    """The 3-constant fit to the H100 points (calibration.json, measured 2026-12-02) holds
    standard's phases within 10% (the fit's measured residual there: 9.1%); draft's points,
    run at a higher FLOP rate, are not held by three constants and are not asserted."""
    points = json.loads(CALIBRATION.read_text())["points"]
    errors = [seconds_per_it(p["launches"], p["tflop"] * 1e12, p["gb_moved"] * 2 ** 30) / p["s_per_it"] - 1
              for p in points if p["preset"] == "standard"]
    assert errors and all(abs(e) < 0.1 for e in errors)


def test_estimate_at_tiny_size_through_the_cli_has_every_figure():
    out = subprocess.run([sys.executable, "-m", "backend", "bench", "--estimate", "--size", "tiny", "--preset",
                          "draft", "--json"], cwd=REPO, capture_output=True, text=True, timeout=600, check=True)
    report = json.loads(out.stdout)
    assert set(report["phases"]) == {"phase1", "phase2", "phase3"}
    for p in report["phases"].values():
        assert {"peak_gb", "tflop", "launches", "syncs", "est_s_per_it", "breakdown_gb"} <= set(p)
        assert abs(sum(p["breakdown_gb"].values()) - p["peak_gb"]) < 0.01  # the breakdown is the peak
    assert report["peak_gb"] == max(p["peak_gb"] for p in report["phases"].values())


@pytest.mark.slow
def test_standard_fits_an_artists_gpu_by_the_estimate():
    report = estimate("standard")
    # 68.8 GB before this change (H100 measured 69.1 GB); the budget is 16 GB, the aim 12.
    assert report["peak_gb"] < 12.0, report
    # Most of what remains are the networks' fp16 weights.
    assert all(p["breakdown_gb"]["weights"] > 4.0 for p in report["phases"].values())
    # The one-time conditioning (C_m, the reference, Zero-1-to-3's inputs) counted from what
    # is resident when it starts: it stays below the steps' peak (6.0 / 4.8 / 4.79 GB
    # measured against 9.75 / 9.24 / 9.10 GB), and the preset's peak covers both.
    for p in report["phases"].values():
        assert p["conditioning_peak_gb"] <= p["peak_gb"] <= report["peak_gb"]
    # Host reads a step as a GPU makes them (docs/performance.md's 1 / 2 / 1): a CPU-only fast path
    # taken by the estimator would count its reads here (DMTet.whole_grid).
    assert [p["syncs"] for p in report["phases"].values()] == [1, 2, 1]


def _field() -> NeRFField:
    torch.manual_seed(0)
    field = NeRFField.from_config(FieldConfig(levels=6, log2_table=10, max_res=128, hidden=16)).double()
    with torch.no_grad():
        for p in field.parameters():
            p.normal_(0, 0.5)
    return field


def test_closed_form_density_gradient_equals_autograd():
    field = _field()
    x = (torch.rand(2000, 3, dtype=torch.float64) * 2 - 1) * 0.999
    xr = x.clone().requires_grad_(True)
    density, albedo = field(xr)
    reference = torch.autograd.grad(density.sum(), xr)[0]
    d, a, g = field.with_gradient(x)
    assert torch.equal(d, density) and torch.equal(a, albedo)
    assert torch.allclose(g, reference, rtol=1e-10, atol=1e-12)


def test_hash_grid_spatial_vjp_equals_autograd_inside_and_outside_the_box():
    """Σ_k g_k ∂h_k/∂x for a random cotangent g, against autograd through the encoding;
    points past the box (clamped) have no spatial gradient, as autograd says too."""
    grid = _field().encoding
    x = torch.rand(3000, 3, dtype=torch.float64) * 2.2 - 1.1
    g = torch.randn(3000, grid.out_dim, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    reference = torch.autograd.grad((grid(xr) * g).sum(), xr)[0]
    features, lattice = grid.encode(x)
    assert torch.equal(features, grid(x))
    got = grid.spatial_vjp(lattice, g)
    assert torch.allclose(got, reference, rtol=1e-10, atol=1e-12)
    outside = x.abs() > 1  # per axis: the clamp stops that component
    assert outside.sum() > 100 and (got[outside] == 0).all() and (reference[outside] == 0).all()


def test_checkpointed_chunks_give_the_double_backward_gradients(monkeypatch):
    """Parameter gradients of a loss on density, albedo and normals: chunked + checkpointed
    closed-form gradients against autograd's double backward on the whole batch."""
    field = _field()
    x = (torch.rand(1500, 3, dtype=torch.float64) * 2 - 1) * 0.9

    def loss(d, a, g):  # noqa: ANN001
        return (0.3 * d).sum() + (a ** 2).sum() + 0.01 * (g ** 2).sum()

    xr = x.clone().requires_grad_(True)
    d, a = field(xr)
    g = torch.autograd.grad(d.sum(), xr, create_graph=True)[0]
    reference = torch.autograd.grad(loss(d, a, g), list(field.parameters()))
    monkeypatch.setattr(volume, "CHUNK", 256)
    got = torch.autograd.grad(loss(*volume.query_field(field, x, True)), list(field.parameters()))
    for r, c in zip(reference, got):
        assert torch.allclose(c, r, rtol=1e-9, atol=1e-12)


def test_tet_edges_by_scalar_keys_equal_the_row_unique():
    dmtet = DMTet(5, [-1.0] * 3, [1.0] * 3)
    from backend.geometry.tets import TET_EDGES

    rows = dmtet.tets[:, torch.tensor(TET_EDGES)].reshape(-1, 2)
    assert torch.equal(dmtet.edges(), torch.unique(torch.sort(rows, dim=-1).values, dim=0))


def test_reference_view_at_most_the_phase_resolution_is_the_area_average():
    rgba = torch.rand(4, 4, 4)
    small = RefView(rgba, elevation=10.0).at_most(2)
    expected = rgba.reshape(2, 2, 2, 2, 4).mean(dim=(1, 3))
    assert torch.allclose(torch.cat([small.rgb, small.mask], -1)[0], expected, atol=1e-6)
    assert small.pose == (10.0, 0.0, 2.5, 40.0) and small.views().cams.height == 2
    assert RefView(rgba).at_most(8).rgb.shape[1] == 4  # never upsampled


def test_bench_at_tiny_size_times_each_phase_and_writes_profiles(tmp_path):
    out = subprocess.run([sys.executable, "-m", "backend", "bench", "--size", "tiny", "--preset", "draft",
                          "--iterations", "1", "--device", "cpu", "--profile", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=600, check=True)
    report = json.loads(out.stdout)
    assert (report["device"], report["preset"], report["size"]) == ("cpu", "draft", "tiny")
    assert [report["phases"][k]["iterations"] for k in ("phase1", "phase2", "phase3")] == [300, 400, 300]
    # the losses draft's phases name with a weight > 0, each a finite number from the first step
    names = {k: set(p["first_losses"]) for k, p in report["phases"].items()}
    assert names == {"phase1": {"aug_sds"}, "phase2": {"cds"}, "phase3": {"aug_sds"}}
    assert all(math.isfinite(v) for p in report["phases"].values() for v in p["first_losses"].values())
    assert all(p["syncs_per_it"] is None and p["peak_mem_gb"] is None for p in report["phases"].values())  # CPU
    for key in ("phase1", "phase2", "phase3"):
        assert json.loads((tmp_path / f"{key}.json").read_text())["traceEvents"]  # a Chrome trace
        assert "unclip.unet" in (tmp_path / f"{key}.txt").read_text()  # the component table


def test_labels_survive_a_checkpoint_that_stops_recomputing_early():
    inner = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4))
    tr = Tracker()
    tr.label_modules({"inner": inner})
    x = torch.randn(3, 4, requires_grad=True)
    with tr:
        y = torch.utils.checkpoint.checkpoint(inner, x, use_reentrant=False)
        y.square().sum().backward()  # recomputes inner, stopping once its saved tensors are back
        after = torch.ones(10)
    assert tr._stack == [] and tr.label == OUTSIDE
    del after


_BUILD_SGC_NETWORKS = """
import sys, tempfile
from pathlib import Path
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from backend.perf.networks import RandomStore
from backend.perf.tracker import Tracker
store = RandomStore(torch.device("cpu"), Path(tempfile.mkdtemp()), FakeTensorMode(allow_non_fake_inputs=True))
with Tracker():
    store.get("dino"), store.get("depth")
weights = [p for role in ("dino", "depth") for p in store._loaded[role].parameters()]
assert weights and all(isinstance(p, FakeTensor) and p.dtype == torch.float16 for p in weights)
print(sum(p.numel() for p in weights))
"""


def test_fake_networks_build_without_initialising_their_weights():
    """DINO's and DPT's ViTs initialise with torch's rejection-sampled trunc_normal_, which
    loops until no value is out of range: on fake weights under the Tracker every test reads
    as the worst case, so it never ended (the high preset's estimate hung). Fake builds skip
    initialisation; a subprocess bounds the wait."""
    out = subprocess.run([sys.executable, "-c", _BUILD_SGC_NETWORKS], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) > 150_000_000  # ViT-B (86M) + DPT at ViT-B size (~120M)


def test_z_variance_keeps_the_opaque_rays_by_weight_without_a_host_sync():
    """HiFA's L_nz over the rays whose opacity exceeds the threshold, as a masked mean (the
    selection form needed a sync for `keep.any()` and another for `weights[keep]`)."""
    from backend.geometry.regularizers import z_variance

    g = torch.Generator().manual_seed(0)
    weights = torch.rand(64, 16, generator=g) * torch.linspace(0.01, 0.12, 64)[:, None]  # some rays below 0.5
    t = torch.sort(torch.rand(64, 16, generator=g) * 3, dim=-1).values
    keep = weights.sum(-1) > 0.5
    assert 0 < keep.sum() < 64
    w = weights[keep] / weights[keep].sum(-1, keepdim=True)
    mean = (w * t[keep]).sum(-1, keepdim=True)
    want = (w * (t[keep] - mean) ** 2).sum(-1).mean()
    tr = Tracker()
    with tr:
        got = z_variance(weights, t)
    assert torch.allclose(got, want, rtol=1e-6) and tr.syncs == 0
    assert z_variance(weights * 0, t) == 0  # no ray kept: zero, not NaN


def test_adam_on_the_gpu_or_the_estimators_fake_tensors_steps_without_a_host_sync():
    from backend.pipeline.optim import make_optimizer

    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake:
        params = [torch.nn.Parameter(torch.empty(100, 2)), torch.nn.Parameter(torch.empty(7))]
        for p in params:
            p.grad = torch.empty_like(p)
    opt = make_optimizer("adam", params, 0.01)
    assert opt.defaults["fused"]
    tr = Tracker()
    with tr:
        opt.step()
        opt.step()
    assert tr.syncs == 0
    assert not make_optimizer("adam", [torch.nn.Parameter(torch.zeros(3))], 0.01).defaults["fused"]  # CPU: default


def test_a_read_of_a_cpu_generators_draw_is_host_work_not_a_sync():
    """The shading mode and CDS's timestep gap are drawn by CPU generators: reading them
    waits for no GPU work on a GPU machine either. A read of computed values does."""
    g = torch.Generator().manual_seed(0)
    tr = Tracker()
    with tr:
        x = torch.ones(10) * 2                                            # queued work
        gap = int(torch.randint(0, 5, (1,), generator=g))                 # host: not a sync
        mode = int(torch.multinomial(torch.tensor([0.3, 0.7]), 1, generator=g))
        assert tr.syncs == 0
        assert float(x.sum()) == 20.0                                     # waits for x: a sync
    assert tr.syncs == 1 and 0 <= gap < 5 and mode in (0, 1)


def test_tolist_of_a_cpu_tensor_is_a_read_too():
    """Tensor.tolist reads a CPU tensor without dispatching an op; the tracker sees it
    (marching tets reads its three sizes that way, the step its losses)."""
    tr = Tracker()
    with tr:
        x = torch.arange(4.0) * 2
        assert x.tolist() == [0.0, 2.0, 4.0, 6.0]
        assert x.tolist() == [0.0, 2.0, 4.0, 6.0]  # nothing queued since: no new wait
    assert tr.syncs == 1 and torch.Tensor.tolist is not None and x.tolist() == [0.0, 2.0, 4.0, 6.0]
