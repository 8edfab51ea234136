"""Multi-resolution hash encoding (Instant-NGP), and the small MLPs on it.

Input points [N,3] in the field's box [-bound, bound]^3; output features [N, L*F].
Levels whose dense grid fits in the table are indexed densely, others hashed with the
Instant-NGP primes. Two implementations of the same arithmetic: fused Triton kernels
(hashgrid_triton.py; on CUDA when Triton imports, `fused`), and PyTorch ops (everywhere
else). The PyTorch path is deterministic: the same parameters and points give the same
features; the fused backward adds with atomics, in no fixed order.
"""
from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake

if TYPE_CHECKING:
    from .hashgrid_triton import GridArgs


def kernels_available(device: torch.device) -> bool:
    """Whether the fused kernels run on this device: CUDA, with Triton installed (found
    without importing it: Triton takes a second to import, and CPU runs never need it)."""
    return device.type == "cuda" and _triton_installed()


@functools.lru_cache(maxsize=1)
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _kernels():  # noqa: ANN202 (the hashgrid_triton module)
    """The fused kernels' module, imported where they are used."""
    from . import hashgrid_triton

    return hashgrid_triton

_PRIMES = (1, 2654435761, 805459861)


class HashGrid(nn.Module):
    def __init__(self, levels: int = 16, features: int = 2, log2_table: int = 19,
                 base_res: int = 16, max_res: int = 2048, bound: float = 1.0, fused: bool = True) -> None:
        """fused: use the Triton kernels where they can run (a power-of-two feature count)."""
        super().__init__()
        self.levels, self.features, self.bound = levels, features, bound
        self.fused = fused and features & (features - 1) == 0
        self._checked = False  # the fused kernels ran once on this machine
        self.table = 1 << log2_table
        growth = math.exp((math.log(max_res) - math.log(base_res)) / max(levels - 1, 1))
        res = [int(math.floor(base_res * growth ** i)) for i in range(levels)]
        self.register_buffer("res", torch.tensor(res, dtype=torch.long), persistent=False)
        self.register_buffer("res_i32", torch.tensor(res, dtype=torch.int32), persistent=False)
        self.n_dense = sum((r + 1) ** 3 <= self.table for r in res)
        sizes = [min((r + 1) ** 3, self.table) for r in res]
        self.register_buffer("offsets", torch.tensor([0] + sizes[:-1]).cumsum(0).to(torch.int32), persistent=False)
        self.embeddings = nn.Parameter(torch.empty(sum(sizes), features).uniform_(-1e-4, 1e-4))
        self.register_buffer("_pair", torch.tensor([0, 1], dtype=torch.int32), persistent=False)
        # Primes as wrapped int32 so the multiply stays in 32 bits.
        self._p1 = torch.tensor(_PRIMES[1], dtype=torch.int64).to(torch.int32).item()
        self._p2 = torch.tensor(_PRIMES[2], dtype=torch.int64).to(torch.int32).item()

    @property
    def out_dim(self) -> int:
        return self.levels * self.features

    def kernel_args(self) -> "GridArgs":
        return _kernels().GridArgs(self.embeddings, self.res_i32, self.offsets,
                                        [self.levels, self.features, self.n_dense, self.table - 1, self._p1, self._p2],
                                        float(self.bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_fused(x):
            out = self._fused(_kernels().encode, x)
            if out is not None:
                return out
        return self._interpolate(x)[0]

    def _use_fused(self, x: torch.Tensor) -> bool:
        """The kernels where they run, and on the estimator's fake tensors, which stand for a
        CUDA run (their ops have shapes and byte counts without Triton)."""
        if not self.fused or x.dtype != torch.float32:
            return False
        return is_fake(x) or is_fake(self.embeddings) or kernels_available(x.device)

    def _fused(self, fn, *args: torch.Tensor) -> torch.Tensor | None:  # noqa: ANN001
        """fn(self's kernel args, *args), or None (and the PyTorch path from then on) if the kernels cannot
        be built on this machine (checked once, all four, before the first use)."""
        if not self._checked and not (is_fake(args[0]) or is_fake(self.embeddings)):
            try:
                _kernels().self_check(self.kernel_args(), args[0].device)
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 (a compiler, driver or toolchain error of any kind)
                warnings.warn(f"fused hash-grid kernels unavailable ({type(exc).__name__}: {exc}); using the "
                              "PyTorch encoding", RuntimeWarning, stacklevel=3)
                self.fused = False
                return None
            self._checked = True
        return fn(self.kernel_args(), *args)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, "Lattice | torch.Tensor"]:
        """features [N, L*F], and what spatial_vjp needs: the lattice they were interpolated
        on (corner features and trilinear weights), or for the fused kernels, which
        recompute it, the points themselves (then x must not require grad)."""
        if self._use_fused(x) and not x.requires_grad:
            out = self._fused(_kernels().encode, x)
            if out is not None:
                return out, x.detach()
        out, feats, wx, raw = self._interpolate(x)
        # d frac / d x per axis: res / (2 bound) inside the box (clamp passes no gradient outside).
        inside = ((raw >= 0) & (raw <= 1)).to(x.dtype) / (2 * self.bound)  # [N,3]
        return out, Lattice(feats, wx, self.res[None, :, None].to(x.dtype) * inside[:, None, :])

    def _interpolate(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """-> features [N, L*F], corner features [N,L,8,F], axis weights [N,L,3,2], x in
        the unit box [N,3] (before clamping)."""
        raw = (x / self.bound + 1) / 2
        u = raw.clamp(0, 1)  # [N,3] in [0,1]
        pos = u[:, None, :] * self.res[None, :, None].to(u.dtype)  # [N,L,3]
        base = torch.minimum(pos.floor(), (self.res - 1)[None, :, None].to(u.dtype))
        frac = pos - base
        # Per axis the two lattice coordinates [N,L,3,2]; corners combine by broadcasting,
        # so corner c = 4 i_x + 2 i_y + i_z.
        coord = base.to(torch.int32)[..., None] + self._pair
        nd = self.n_dense  # levels [0, nd) are dense, the rest hashed (resolutions grow)
        res1 = (self.res[:nd] + 1).to(torch.int32)[None, :, None, None, None]
        cx, cy, cz = coord[:, :nd, 0], coord[:, :nd, 1], coord[:, :nd, 2]
        dense = (cx[..., :, None, None] * res1 + cy[..., None, :, None]) * res1 + cz[..., None, None, :]
        # int32 products wrap like Instant-NGP's uint32 hash; the table size is a power of two.
        hx, hy, hz = coord[:, nd:, 0], coord[:, nd:, 1] * self._p1, coord[:, nd:, 2] * self._p2
        hashed = (hx[..., :, None, None] ^ hy[..., None, :, None] ^ hz[..., None, None, :]) & (self.table - 1)
        idx = torch.cat([dense, hashed], dim=1)
        n = x.shape[0]
        idx = (idx.reshape(n, self.levels, 8) + self.offsets[None, :, None]).reshape(-1)
        feats = self.embeddings.index_select(0, idx.long()).reshape(n, self.levels, 8, self.features)
        wx = torch.stack([1 - frac, frac], dim=-1)  # [N,L,3,2]
        # unbind, not indexing: its backward stacks the three gradients once, where each
        # select's backward would write a zero-filled copy of the whole tensor.
        w0, w1, w2 = wx.unbind(2)
        w = w0[..., :, None, None] * w1[..., None, :, None] * w2[..., None, None, :]
        out = (feats * w.reshape(n, self.levels, 8, 1)).sum(2).reshape(n, -1)
        return out, feats, wx, raw

    def spatial_vjp(self, lattice: "Lattice | torch.Tensor", g: torch.Tensor) -> torch.Tensor:
        """Σ_k g_k ∂h_k/∂x [N,3] for a cotangent g [N, L*F] on the features, in closed form
        (a field's normals need no double backward, so they can be checkpointed): one fused
        kernel when encode() gave the points, else ordinary ops. Contracting g with the
        corner features first leaves [N,L,8] to differentiate: the trilinear weight's
        derivative along an axis is the difference of that axis's two corner faces,
        weighted bilinearly by the other two axes."""
        if isinstance(lattice, torch.Tensor):
            return _kernels().spatial_vjp(self.kernel_args(), lattice, g)
        feats, wx, dfrac = lattice
        n, levels, _, f = feats.shape
        s = (feats * g.reshape(n, levels, 1, f)).sum(-1).reshape(n, levels, 2, 2, 2)
        w0, w1, w2 = wx.unbind(2)  # [N,L,2] each
        faces = [s.unbind(axis) for axis in (2, 3, 4)]  # each axis's two faces [N,L,2,2]
        d0 = ((faces[0][1] - faces[0][0]) * w1[..., :, None] * w2[..., None, :]).sum((-1, -2))
        d1 = ((faces[1][1] - faces[1][0]) * w0[..., :, None] * w2[..., None, :]).sum((-1, -2))
        d2 = ((faces[2][1] - faces[2][0]) * w0[..., :, None] * w1[..., None, :]).sum((-1, -2))
        return (torch.stack([d0, d1, d2], -1) * dfrac).sum(1)


class Lattice(NamedTuple):
    """The corner features [N,L,8,F], per-axis trilinear weights [N,L,3,2] (1 - frac,
    frac) and d frac / d x [N,L,3] of one encode() call."""

    feats: torch.Tensor
    wx: torch.Tensor
    dfrac: torch.Tensor


def mlp_input_gradient(net: nn.Sequential, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An mlp() with one output applied to h [N,D] -> (output [N], d output / d h [N,D]),
    the latter by a reverse pass through its Linear and ReLU layers (one [N,width] vector
    a layer instead of a forward-mode Jacobian [N,width,3])."""
    masks = []
    for layer in net:
        if isinstance(layer, nn.Linear):
            h = layer(h)
        elif isinstance(layer, nn.ReLU):
            h = torch.relu(h)  # one pass (a where over a zeros_like was three)
            masks.append(h > 0)
        else:
            raise TypeError(f"no gradient rule for {type(layer).__name__}")
    linears = [m for m in net if isinstance(m, nn.Linear)]
    if linears[-1].out_features != 1:
        raise ValueError("mlp_input_gradient needs a one-output head")
    g = linears[-1].weight.expand(h.shape[0], -1)  # [N, width]
    for layer, on in zip(reversed(linears[:-1]), reversed(masks)):
        g = torch.where(on, g, 0.0) @ layer.weight  # masked in one pass, no float copy of the mask
    return h[:, 0], g


def mlp(in_dim: int, out_dim: int, hidden: int = 64, layers: int = 2) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)
