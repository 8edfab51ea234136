"""The fused Triton hash-grid kernels against the PyTorch path (the reference: its own
tests compare it with autograd in float64, test_perf.py / test_geometry.py). On the CPU the
kernels run through Triton's interpreter (TRITON_INTERPRET=1, set in conftest.py before
Triton is imported). Grids here have dense and hashed levels, points inside and outside
the box, and tables of unit scale so relative errors mean something."""
import warnings

import pytest
import torch

from backend.geometry import hashgrid, hashgrid_triton
from backend.geometry.fields import FieldConfig, NeRFField
from backend.geometry.hashgrid import HashGrid

pytestmark = pytest.mark.skipif(hashgrid_triton.triton is None, reason="Triton is not installed")


def _grid(features: int = 2) -> HashGrid:
    grid = HashGrid(levels=6, features=features, log2_table=10, base_res=4, max_res=96)
    assert 0 < grid.n_dense < grid.levels  # both kinds of level
    with torch.no_grad():
        grid.embeddings.uniform_(-1, 1)
    return grid


def _points(n: int = 300) -> torch.Tensor:
    x = torch.rand(n, 3) * 2.2 - 1.1  # some outside [-1, 1]^3, where the grid clamps
    x[:4] = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.05, -0.3, 0.2]])
    return x


def _close(got: torch.Tensor, want: torch.Tensor, rel: float) -> None:
    err = (got - want).abs().max() / want.abs().max()
    assert err <= rel, f"relative error {err:.2e} > {rel:g}"


@pytest.mark.parametrize("features", [2, 4])
def test_fused_encoding_equals_the_pytorch_path(features):
    grid, x = _grid(features), _points()
    _close(hashgrid_triton.encode(grid.kernel_args(), x), grid._interpolate(x)[0], 1e-5)


@pytest.mark.parametrize("features", [2, 4])
def test_fused_encoding_gradients_equal_autograd_through_the_pytorch_path(features):
    grid, x = _grid(features), _points()
    w = torch.randn(x.shape[0], grid.out_dim)
    xs = x.clone().requires_grad_(True)
    (grid._interpolate(xs)[0] * w).sum().backward()
    want_table, want_x = grid.embeddings.grad.clone(), xs.grad.clone()
    grid.embeddings.grad = None
    xf = x.clone().requires_grad_(True)
    (hashgrid_triton.encode(grid.kernel_args(), xf) * w).sum().backward()
    _close(grid.embeddings.grad, want_table, 1e-4)
    _close(xf.grad, want_x, 1e-4)


def test_fused_spatial_vjp_and_its_gradients_equal_the_pytorch_path():
    grid, x = _grid(), _points()
    g = torch.randn(x.shape[0], grid.out_dim)
    cot = torch.randn(x.shape[0], 3)
    gt = g.clone().requires_grad_(True)
    _, lattice = grid.encode(x)  # on the CPU: the PyTorch path
    want = grid.spatial_vjp(lattice, gt)
    (want * cot).sum().backward()
    want_g, want_table = gt.grad.clone(), grid.embeddings.grad.clone()
    grid.embeddings.grad = None
    gf = g.clone().requires_grad_(True)
    got = hashgrid_triton.spatial_vjp(grid.kernel_args(), x, gf)
    _close(got, want, 1e-5)
    (got * cot).sum().backward()
    _close(gf.grad, want_g, 1e-4)
    _close(grid.embeddings.grad, want_table, 1e-4)


def test_the_nerf_on_the_fused_grid_gives_the_pytorch_density_normals_and_gradients(monkeypatch):
    cfg = FieldConfig(levels=6, log2_table=10, base_res=4, max_res=96, hidden=16)
    torch.manual_seed(3)
    field = NeRFField.from_config(cfg)
    with torch.no_grad():
        field.encoding.embeddings.uniform_(-0.5, 0.5)
    x = _points(200) * 0.8

    def run(fused: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        monkeypatch.setattr(hashgrid, "kernels_available", lambda device: fused)
        field.zero_grad(set_to_none=True)
        density, albedo, normal = field.with_gradient(x)
        loss = density.sum() + (albedo * 0.3).sum() + (normal ** 2).sum()
        loss.backward()
        return [density, albedo, normal], [p.grad.clone() for p in field.parameters()]

    ref_out, ref_grads = run(False)
    out, grads = run(True)
    for got, want in zip(out, ref_out):
        _close(got.detach(), want.detach(), 1e-5)
    for got, want in zip(grads, ref_grads):
        _close(got, want, 1e-4)


def test_a_machine_whose_triton_cannot_build_the_kernels_falls_back_with_a_warning(monkeypatch):
    grid, x = _grid(), _points(20)

    def broken(*args: object) -> None:
        raise RuntimeError("no working CUDA toolchain")

    monkeypatch.setattr(hashgrid, "kernels_available", lambda device: True)
    monkeypatch.setattr(hashgrid_triton, "self_check", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = grid(x)
    assert torch.equal(out, grid._interpolate(x)[0]) and not grid.fused
    assert any("fused hash-grid kernels unavailable" in str(w.message) for w in caught)


def test_a_first_use_without_gradients_keeps_the_fused_kernels(monkeypatch):
    """The self-check differentiates the kernels: under no_grad (a preview, an occupancy
    update) it must still pass rather than fall back."""
    grid, x = _grid(), _points(20)
    monkeypatch.setattr(hashgrid, "kernels_available", lambda device: True)
    with torch.no_grad():
        out = grid(x)
    assert grid.fused and grid._checked
    _close(out, grid._interpolate(x)[0], 1e-5)
