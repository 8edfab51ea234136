"""Data-dependent sizes without a host sync a step (backend/render/sizes.py): compaction
at a capacity against torch.nonzero, the capacities' bookkeeping, the dense renders at a
capacity against the exact ones, and a step whose count outgrew its capacity run again
with the same draws (against a phase that never overflowed)."""
import math

import pytest
import torch

from backend.geometry.fields import FieldConfig, NeRFField
from backend.render import sizes
from backend.render.camera import orbit_cameras
from backend.render.shading import fixed_views
from backend.render.volume import render_volume


@pytest.mark.parametrize("size", [0, 5, 37, 64])
def test_compact_is_nonzero_at_a_fixed_size(size):
    mask = torch.rand(200, generator=torch.Generator().manual_seed(size)) < 0.2
    truth = torch.nonzero(mask)[:, 0]
    index, valid = sizes.compact(mask, size)
    assert index.shape == (size,) and valid.shape == (size,)
    k = min(size, truth.numel())
    assert torch.equal(index[:k], truth[:k]) and valid[:k].all()
    assert (index[k:] == 200).all() and not valid[k:].any()  # past the count: the spare index


def test_capacities_follow_the_counts_with_room_and_report_an_overflow():
    s = sizes.StepSizes()
    assert s.room("raster", torch.tensor(5000), None) == 5000  # first use: read, once
    assert s.room("raster", torch.tensor(70), None) == 70      # the step's second rasterize: its own site
    assert s.settle([5000, 70])
    assert s.capacity == {"raster#0": math.ceil(5000 * sizes.GROWTH / sizes.QUANTUM) * sizes.QUANTUM,
                          "raster#1": sizes.QUANTUM}
    assert s.room("raster", torch.tensor(9000), None) == 8192 and s.room("raster", torch.tensor(1), None) == 4096
    assert not s.settle([9000, 1])  # 9000 pairs met a capacity of 8192: the step runs again
    assert s.capacity["raster#0"] == 12288
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = torch.empty((), dtype=torch.long)
    assert s.room("volume", fake, 1234) == 1234 and s.pending() == []  # the estimator: worst case


def _field() -> NeRFField:
    torch.manual_seed(0)
    field = NeRFField.from_config(FieldConfig(levels=4, log2_table=10, max_res=64, hidden=16))
    with torch.no_grad():
        field.occupancy[torch.rand(field.occupancy.shape) < 0.5] = False  # a sparse occupancy
    return field


def test_a_dense_volume_render_at_a_capacity_is_the_exact_render():
    field = _field()
    views = fixed_views(orbit_cameras(torch.tensor([10.0, 30.0]), torch.tensor([0.0, 90.0]), 2.5, 40.0, 16), "lambertian")
    exact = render_volume(field, views, 24, None, need_normals=True, dense=False)
    g_exact = torch.autograd.grad(exact.image.sum(), list(field.parameters()), allow_unused=True)
    steps = sizes.StepSizes()
    for _ in range(2):  # the first use reads its count; the second runs at the capacity
        with sizes.sizing(steps):
            out = render_volume(field, views, 24, None, need_normals=True, dense=True)
        assert steps.settle([float(c) for c in steps.pending()])
        assert torch.allclose(out.image, exact.image, atol=1e-6) and torch.allclose(out.normal, exact.normal, atol=1e-5)
    g = torch.autograd.grad(out.image.sum(), list(field.parameters()), allow_unused=True)
    for a, b in zip(g, g_exact):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, rtol=1e-5, atol=1e-7))
    steps.capacity = {k: 8 for k in steps.capacity}  # too small: the render misses samples
    with sizes.sizing(steps):
        render_volume(field, views, 24, None, need_normals=True, dense=True)
    assert not steps.settle([float(c) for c in steps.pending()])


def _texture_phase():  # noqa: ANN202
    from backend.geometry.fields import TextureField
    from backend.pipeline.config import resolve
    from backend.pipeline.guidance_terms import build_terms
    from backend.pipeline.phases import PhaseContext, TexturePhase, phase3_field
    from backend.render.raster import TorchRasterizer

    from .test_pbr import _regions_target

    cfg = resolve("draft", {"phase3.resolution": 48})
    target, raster = _regions_target(16), TorchRasterizer(dense=True)
    torch.manual_seed(0)
    field = phase3_field(TextureField.from_config(cfg.phase1.field), cfg, 0)
    return TexturePhase(cfg.phase3, PhaseContext(raster, torch.device("cpu"), 0, 1.0),
                        build_terms("phase3", cfg.phase3, "oracle", raster, 0, print, oracle_target=target),
                        target.verts, target.faces, field)


def test_a_step_whose_count_outgrew_its_capacity_runs_again_with_the_same_draws():
    a, b = _texture_phase(), _texture_phase()
    assert a.step(0) == b.step(0)
    b.sizes.capacity = {k: 64 for k in b.sizes.capacity}  # far fewer pairs than the views have
    settled, settle = [], b.sizes.settle
    b.sizes.settle = lambda counts: settled.append(settle(counts)) or settled[-1]  # noqa: E731
    assert a.step(1) == b.step(1)  # b's renders overflowed; the step ran again, exactly
    assert settled == [False]
    for pa, pb in zip(a.texture.parameters(), b.texture.parameters()):
        assert torch.equal(pa, pb)
    assert b.sizes.capacity == a.sizes.capacity  # both follow the step's counts


def test_pairs_past_the_count_on_a_last_triangle_with_an_empty_box_are_masked():
    """At a capacity the spare pairs take the last triangle; when that one covers no pixel
    (left of the view here: an empty box) they must still be masked, not divided by its width."""
    from backend.render import raster_torch as rt

    pos = torch.tensor([[[-0.5, -0.5, 0.0, 1.0], [0.5, -0.5, 0.0, 1.0], [0.0, 0.5, 0.0, 1.0],
                         [-3.0, 0.0, 0.0, 1.0], [-2.9, 0.0, 0.0, 1.0], [-3.0, 0.1, 0.0, 1.0]]])
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    exact = rt.rasterize(pos, tri, (16, 16), dense=True)
    steps = sizes.StepSizes()
    with sizes.sizing(steps):
        rt.rasterize(pos, tri, (16, 16), dense=True)
    assert steps.settle([float(c) for c in steps.pending()])
    with sizes.sizing(steps):  # now at a capacity past the count
        at_capacity = rt.rasterize(pos, tri, (16, 16), dense=True)
    assert steps.capacity["raster#0"] > float(steps.pending()[0]) and torch.equal(at_capacity, exact)
