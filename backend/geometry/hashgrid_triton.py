"""The hash-grid encoding as fused Triton kernels: the same arithmetic as HashGrid's PyTorch
path (hashgrid.py), one kernel per direction instead of ~40 ops with [N,L,8,F] temporaries.

Four kernels, each over a block of points and every level in registers:
- encode:      h [N, L*F] = Σ_corners w_c · table[idx_c]
- encode_bwd:  d table += w_c · g   (atomic adds; also the hash-grid's weight gradient)
- vjp:         Σ_k g_k ∂h_k/∂x [N,3]  (the NeRF's normals, and encode's input gradient)
- vjp_bwd:     the vjp's gradients with respect to g and to the table

Autograd: `encode(grid, x)` and `spatial_vjp(grid, x, g)` (grid: a GridArgs, what HashGrid
hands over) are torch operators whose backward calls the kernels above; the vjp's own gradient with respect to x (a second derivative of
the trilinear weights) is not provided, so HashGrid takes this path only for points that do
not require grad (the NeRF's samples never do). HashGrid takes them on CUDA when Triton is
installed (hashgrid.kernels_available); under Triton's interpreter (TRITON_INTERPRET=1 set
before this module is imported) they also run on CPU tensors: how the tests check them.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton (macOS, Windows without triton-windows): the PyTorch path
    triton = None

BLOCK = 128  # points a program (the kernels' tl.arange(0, 128))


class GridArgs(NamedTuple):
    """A hash grid as the kernels see it: the table [T,F], per-level resolutions and table
    offsets (int32 [L]), meta = [levels, features, dense levels, table size - 1, prime 1,
    prime 2] (the primes as wrapped int32), and the box's half-size."""

    table: torch.Tensor
    res: torch.Tensor
    offsets: torch.Tensor
    meta: list[int]
    bound: float


def self_check(grid: GridArgs, device: torch.device) -> None:
    """Build and run all four kernels once on two points (raises what Triton raises), so a
    machine whose Triton cannot compile them falls back before a training step, not in its
    backward."""
    x = torch.tensor([[0.1, -0.2, 0.3], [2.0, 0.0, -0.5]], device=device)
    with torch.enable_grad():  # the first use may come under no_grad (a preview, an occupancy update)
        table = grid.table.detach().requires_grad_(True)
        g = torch.ones(2, grid.meta[0] * grid.meta[1], device=device, requires_grad=True)
        out = encode_op(x, table, grid.res, grid.offsets, grid.meta, grid.bound)
        vjp = vjp_op(x, table, g, grid.res, grid.offsets, grid.meta, grid.bound)
        torch.autograd.grad(out.sum() + vjp.sum(), (table, g))


if triton is not None:

    @triton.jit
    def _corner(i0, i1, i2, r, off, f0, f1, f2, C: tl.constexpr, DENSE: tl.constexpr, MASK: tl.constexpr,
                P1: tl.constexpr, P2: tl.constexpr):
        """Table row and trilinear weight of corner C (= 4 i_x + 2 i_y + i_z) of the cells
        with lower corners (i0, i1, i2); also the weight's derivatives along each axis."""
        bx: tl.constexpr = (C >> 2) & 1
        by: tl.constexpr = (C >> 1) & 1
        bz: tl.constexpr = C & 1
        cx = i0 + bx
        cy = i1 + by
        cz = i2 + bz
        if DENSE:
            idx = (cx * (r + 1) + cy) * (r + 1) + cz
        else:  # int32 products wrap like Instant-NGP's uint32 hash; the table is a power of two
            idx = (cx ^ (cy * P1) ^ (cz * P2)) & MASK
        wx = f0 if bx else 1 - f0
        wy = f1 if by else 1 - f1
        wz = f2 if bz else 1 - f2
        sx = 1.0 if bx else -1.0
        sy = 1.0 if by else -1.0
        sz = 1.0 if bz else -1.0
        return idx + off, wx * wy * wz, sx * wy * wz, wx * sy * wz, wx * wy * sz

    @triton.jit
    def _cell(x0, x1, x2, res_ptr, off_ptr, l: tl.constexpr, bound):
        """Level l's lattice for points (x0, x1, x2): lower corners, fractions, the table
        offset and resolution, and d frac / d x per axis (0 outside the box, where the
        clamp passes no gradient)."""
        r = tl.load(res_ptr + l)
        off = tl.load(off_ptr + l)
        rf = r.to(tl.float32)
        raw0 = (x0 / bound + 1) * 0.5
        raw1 = (x1 / bound + 1) * 0.5
        raw2 = (x2 / bound + 1) * 0.5
        p0 = tl.minimum(tl.maximum(raw0, 0.0), 1.0) * rf
        p1 = tl.minimum(tl.maximum(raw1, 0.0), 1.0) * rf
        p2 = tl.minimum(tl.maximum(raw2, 0.0), 1.0) * rf
        b0 = tl.minimum(tl.floor(p0), rf - 1)
        b1 = tl.minimum(tl.floor(p1), rf - 1)
        b2 = tl.minimum(tl.floor(p2), rf - 1)
        scale = rf / (2 * bound)
        d0 = tl.where((raw0 >= 0) & (raw0 <= 1), scale, 0.0)
        d1 = tl.where((raw1 >= 0) & (raw1 <= 1), scale, 0.0)
        d2 = tl.where((raw2 >= 0) & (raw2 <= 1), scale, 0.0)
        return (b0.to(tl.int32), b1.to(tl.int32), b2.to(tl.int32), p0 - b0, p1 - b1, p2 - b2, r, off, d0, d1, d2)

    @triton.jit
    def _points(x_ptr, n, F: tl.constexpr):
        """This program's block of 128 points (BLOCK): rows, masks, the feature lane index,
        and the coordinates."""
        rows = tl.program_id(0) * 128 + tl.arange(0, 128)
        m = rows < n
        x0 = tl.load(x_ptr + rows * 3, mask=m, other=0.0)
        x1 = tl.load(x_ptr + rows * 3 + 1, mask=m, other=0.0)
        x2 = tl.load(x_ptr + rows * 3 + 2, mask=m, other=0.0)
        return rows, m, m[:, None], tl.arange(0, F), x0, x1, x2

    @triton.jit
    def _level_ptrs(base_ptr, rows, feat, l: tl.constexpr, L: tl.constexpr, F: tl.constexpr):
        """Addresses of level l's features of the block's points in a [N, L*F] tensor."""
        return base_ptr + rows[:, None] * (L * F) + l * F + feat[None, :]

    @triton.jit
    def _encode_kernel(x_ptr, table_ptr, res_ptr, off_ptr, out_ptr, n, bound, L: tl.constexpr, F: tl.constexpr,
                       N_DENSE: tl.constexpr, MASK: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr):
        rows, m, m2, feat, x0, x1, x2 = _points(x_ptr, n, F)
        for l in tl.static_range(L):
            i0, i1, i2, f0, f1, f2, r, off, d0, d1, d2 = _cell(x0, x1, x2, res_ptr, off_ptr, l, bound)
            acc = tl.zeros((128, F), dtype=tl.float32)
            for c in tl.static_range(8):
                idx, w, gx, gy, gz = _corner(i0, i1, i2, r, off, f0, f1, f2, c, l < N_DENSE, MASK, P1, P2)
                rows_f = tl.load(table_ptr + idx[:, None] * F + feat[None, :], mask=m2, other=0.0)
                acc += w[:, None] * rows_f
            tl.store(_level_ptrs(out_ptr, rows, feat, l, L, F), acc, mask=m2)

    @triton.jit
    def _encode_bwd_kernel(x_ptr, g_ptr, res_ptr, off_ptr, dtable_ptr, n, bound, L: tl.constexpr, F: tl.constexpr,
                           N_DENSE: tl.constexpr, MASK: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr):
        rows, m, m2, feat, x0, x1, x2 = _points(x_ptr, n, F)
        for l in tl.static_range(L):
            i0, i1, i2, f0, f1, f2, r, off, d0, d1, d2 = _cell(x0, x1, x2, res_ptr, off_ptr, l, bound)
            g = tl.load(_level_ptrs(g_ptr, rows, feat, l, L, F), mask=m2, other=0.0)
            for c in tl.static_range(8):
                idx, w, gx, gy, gz = _corner(i0, i1, i2, r, off, f0, f1, f2, c, l < N_DENSE, MASK, P1, P2)
                tl.atomic_add(dtable_ptr + idx[:, None] * F + feat[None, :], w[:, None] * g, mask=m2)

    @triton.jit
    def _vjp_kernel(x_ptr, table_ptr, g_ptr, res_ptr, off_ptr, out_ptr, n, bound, L: tl.constexpr,
                    F: tl.constexpr, N_DENSE: tl.constexpr, MASK: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr):
        rows, m, m2, feat, x0, x1, x2 = _points(x_ptr, n, F)
        o0 = tl.zeros((128,), dtype=tl.float32)
        o1 = tl.zeros((128,), dtype=tl.float32)
        o2 = tl.zeros((128,), dtype=tl.float32)
        for l in tl.static_range(L):
            i0, i1, i2, f0, f1, f2, r, off, d0, d1, d2 = _cell(x0, x1, x2, res_ptr, off_ptr, l, bound)
            g = tl.load(_level_ptrs(g_ptr, rows, feat, l, L, F), mask=m2, other=0.0)
            a0 = tl.zeros((128,), dtype=tl.float32)
            a1 = tl.zeros((128,), dtype=tl.float32)
            a2 = tl.zeros((128,), dtype=tl.float32)
            for c in tl.static_range(8):
                idx, w, gx, gy, gz = _corner(i0, i1, i2, r, off, f0, f1, f2, c, l < N_DENSE, MASK, P1, P2)
                s = tl.sum(tl.load(table_ptr + idx[:, None] * F + feat[None, :], mask=m2, other=0.0) * g, axis=1)
                a0 += s * gx
                a1 += s * gy
                a2 += s * gz
            o0 += a0 * d0
            o1 += a1 * d1
            o2 += a2 * d2
        tl.store(out_ptr + rows * 3, o0, mask=m)
        tl.store(out_ptr + rows * 3 + 1, o1, mask=m)
        tl.store(out_ptr + rows * 3 + 2, o2, mask=m)

    @triton.jit
    def _vjp_bwd_kernel(x_ptr, table_ptr, g_ptr, go_ptr, res_ptr, off_ptr, dg_ptr, dtable_ptr, n, bound,
                        L: tl.constexpr, F: tl.constexpr, N_DENSE: tl.constexpr, MASK: tl.constexpr,
                        P1: tl.constexpr, P2: tl.constexpr):
        rows, m, m2, feat, x0, x1, x2 = _points(x_ptr, n, F)
        q0 = tl.load(go_ptr + rows * 3, mask=m, other=0.0)
        q1 = tl.load(go_ptr + rows * 3 + 1, mask=m, other=0.0)
        q2 = tl.load(go_ptr + rows * 3 + 2, mask=m, other=0.0)
        for l in tl.static_range(L):
            i0, i1, i2, f0, f1, f2, r, off, d0, d1, d2 = _cell(x0, x1, x2, res_ptr, off_ptr, l, bound)
            g = tl.load(_level_ptrs(g_ptr, rows, feat, l, L, F), mask=m2, other=0.0)
            dg = tl.zeros((128, F), dtype=tl.float32)
            for c in tl.static_range(8):
                idx, w, gx, gy, gz = _corner(i0, i1, i2, r, off, f0, f1, f2, c, l < N_DENSE, MASK, P1, P2)
                v = q0 * d0 * gx + q1 * d1 * gy + q2 * d2 * gz  # d out / d s_c: the corner's share
                dg += v[:, None] * tl.load(table_ptr + idx[:, None] * F + feat[None, :], mask=m2, other=0.0)
                tl.atomic_add(dtable_ptr + idx[:, None] * F + feat[None, :], v[:, None] * g, mask=m2)
            tl.store(_level_ptrs(dg_ptr, rows, feat, l, L, F), dg, mask=m2)


# The kernels as torch operators (torch.library): autograd, FakeTensor shapes (the
# estimator runs them on fake tensors, perf/tracker.py counts what they move) and
# torch.compile all see one op each. `meta` = [levels, features, dense levels, table mask,
# prime 1, prime 2]; res / offsets are the grid's int32 buffers.
Meta = list[int]


def _launch(kernel, x: torch.Tensor, inputs: tuple, outputs: tuple, res: torch.Tensor, offsets: torch.Tensor,  # noqa: ANN001
            meta: Meta, bound: float) -> None:
    n = x.shape[0]
    if n:
        levels, features, n_dense, mask, p1, p2 = meta
        kernel[(triton.cdiv(n, BLOCK),)](x, *inputs, res, offsets, *outputs, n, bound, L=levels, F=features,
                                         N_DENSE=n_dense, MASK=mask, P1=p1, P2=p2)


@torch.library.custom_op("conjure::hashgrid_encode", mutates_args=())
def encode_op(x: torch.Tensor, table: torch.Tensor, res: torch.Tensor, offsets: torch.Tensor, meta: Meta,
              bound: float) -> torch.Tensor:
    out = x.new_empty(x.shape[0], meta[0] * meta[1])
    _launch(_encode_kernel, x, (table,), (out,), res, offsets, meta, bound)
    return out


@torch.library.custom_op("conjure::hashgrid_encode_backward", mutates_args=())
def encode_backward_op(x: torch.Tensor, g: torch.Tensor, rows: int, res: torch.Tensor, offsets: torch.Tensor,
                       meta: Meta, bound: float) -> torch.Tensor:
    dtable = x.new_zeros(rows, meta[1])
    _launch(_encode_bwd_kernel, x, (g,), (dtable,), res, offsets, meta, bound)
    return dtable


@torch.library.custom_op("conjure::hashgrid_vjp", mutates_args=())
def vjp_op(x: torch.Tensor, table: torch.Tensor, g: torch.Tensor, res: torch.Tensor, offsets: torch.Tensor,
           meta: Meta, bound: float) -> torch.Tensor:
    out = x.new_empty(x.shape[0], 3)
    _launch(_vjp_kernel, x, (table, g), (out,), res, offsets, meta, bound)
    return out


@torch.library.custom_op("conjure::hashgrid_vjp_backward", mutates_args=())
def vjp_backward_op(x: torch.Tensor, table: torch.Tensor, g: torch.Tensor, go: torch.Tensor, res: torch.Tensor,
                    offsets: torch.Tensor, meta: Meta, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    dg, dtable = torch.empty_like(g), torch.zeros_like(table)
    _launch(_vjp_bwd_kernel, x, (table, g, go), (dg, dtable), res, offsets, meta, bound)
    return dg, dtable


@encode_op.register_fake
def _(x, table, res, offsets, meta, bound):  # noqa: ANN001, ANN202
    return x.new_empty(x.shape[0], meta[0] * meta[1])


@encode_backward_op.register_fake
def _(x, g, rows, res, offsets, meta, bound):  # noqa: ANN001, ANN202
    return x.new_empty(rows, meta[1])


@vjp_op.register_fake
def _(x, table, g, res, offsets, meta, bound):  # noqa: ANN001, ANN202
    return x.new_empty(x.shape[0], 3)


@vjp_backward_op.register_fake
def _(x, table, g, go, res, offsets, meta, bound):  # noqa: ANN001, ANN202
    return torch.empty_like(g), torch.empty_like(table)


def _save(ctx, inputs: tuple, output: torch.Tensor) -> None:  # noqa: ANN001
    ctx.save_for_backward(*(t for t in inputs if isinstance(t, torch.Tensor)))
    ctx.meta, ctx.bound = inputs[-2], inputs[-1]


def _encode_grad(ctx, g: torch.Tensor) -> tuple:  # noqa: ANN001
    x, table, res, offsets = ctx.saved_tensors
    g = g.contiguous().float()
    dtable = encode_backward_op(x, g, table.shape[0], res, offsets, ctx.meta, ctx.bound) \
        if ctx.needs_input_grad[1] else None
    dx = vjp_op(x, table, g, res, offsets, ctx.meta, ctx.bound) if ctx.needs_input_grad[0] else None
    return dx, dtable, None, None, None, None


def _vjp_grad(ctx, go: torch.Tensor) -> tuple:  # noqa: ANN001
    if ctx.needs_input_grad[0]:
        raise RuntimeError("the fused spatial VJP has no gradient with respect to the points")
    x, table, g, res, offsets = ctx.saved_tensors
    dg, dtable = vjp_backward_op(x, table, g, go.contiguous().float(), res, offsets, ctx.meta, ctx.bound)
    return None, dtable, dg, None, None, None, None


encode_op.register_autograd(_encode_grad, setup_context=lambda ctx, inputs, output: _save(ctx, inputs, output))
vjp_op.register_autograd(_vjp_grad, setup_context=lambda ctx, inputs, output: _save(ctx, inputs, output))


def encode(grid: GridArgs, x: torch.Tensor) -> torch.Tensor:
    """points [N,3] -> features [N, L*F] (float32), differentiable in the table and x."""
    return encode_op(x.contiguous().float(), grid.table, grid.res, grid.offsets, grid.meta, grid.bound)


def spatial_vjp(grid: GridArgs, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Σ_k g_k ∂h_k/∂x [N,3] for points [N,3] that do not require grad and a cotangent
    g [N, L*F]; differentiable in g and the table."""
    return vjp_op(x.detach().contiguous().float(), grid.table, g.contiguous().float(), grid.res, grid.offsets,
                  grid.meta, grid.bound)
