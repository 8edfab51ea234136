"""Multi-resolution hash encoding (Instant-NGP) in pure PyTorch, and the small MLPs on it.

Input points [N,3] in the field's box [-bound, bound]^3; output features [N, L*F].
Levels whose dense grid fits in the table are indexed densely, others hashed with the
Instant-NGP primes. Deterministic: the same parameters and points give the same features.
"""
from __future__ import annotations

import math

import torch
from torch import nn

_PRIMES = (1, 2654435761, 805459861)


class HashGrid(nn.Module):
    def __init__(self, levels: int = 16, features: int = 2, log2_table: int = 19,
                 base_res: int = 16, max_res: int = 2048, bound: float = 1.0) -> None:
        super().__init__()
        self.levels, self.features, self.bound = levels, features, bound
        self.table = 1 << log2_table
        growth = math.exp((math.log(max_res) - math.log(base_res)) / max(levels - 1, 1))
        res = [int(math.floor(base_res * growth ** i)) for i in range(levels)]
        self.register_buffer("res", torch.tensor(res, dtype=torch.long), persistent=False)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x, jacobian=False)[0]

    def encode(self, x: torch.Tensor, jacobian: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """features [N, L*F] and, with jacobian, their derivative w.r.t. x [N, L*F, 3] in
        closed form (trilinear weights differentiated per axis), as ordinary ops: the
        gradient of a field needs no double backward, so it can be checkpointed."""
        raw = (x / self.bound + 1) / 2
        u = raw.clamp(0, 1)  # [N,3] in [0,1]
        pos = u[:, None, :] * self.res[None, :, None].to(u.dtype)  # [N,L,3]
        base = torch.minimum(pos.floor(), (self.res - 1)[None, :, None].to(u.dtype))
        frac = pos - base
        # Per axis the two lattice coordinates [N,L,3,2]; corners combine by broadcasting.
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
        w = (wx[:, :, 0, :, None, None] * wx[:, :, 1, None, :, None] * wx[:, :, 2, None, None, :])
        out = (feats * w.reshape(n, self.levels, 8, 1)).sum(2).reshape(n, -1)
        if not jacobian:
            return out, None
        # d frac / d x per axis: res / (2 bound) inside the box (clamp passes no gradient outside).
        inside = ((raw >= 0) & (raw <= 1)).to(x.dtype) / (2 * self.bound)  # [N,3]
        dfrac = self.res[None, :, None].to(x.dtype) * inside[:, None, :]  # [N,L,3]
        dwx = torch.tensor([-1.0, 1.0], dtype=x.dtype, device=x.device)  # d wx / d frac
        parts = []
        for axis in range(3):
            f = [wx[:, :, a] if a != axis else dwx.expand_as(wx[:, :, a]) for a in range(3)]
            dw = (f[0][:, :, :, None, None] * f[1][:, :, None, :, None] * f[2][:, :, None, None, :])
            parts.append((feats * dw.reshape(n, self.levels, 8, 1)).sum(2) * dfrac[:, :, axis, None])
        return out, torch.stack(parts, -1).reshape(n, -1, 3)


def mlp_with_jacobian(net: nn.Sequential, h: torch.Tensor, jac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An mlp() applied to h [N,D] carrying the input Jacobian jac [N,D,3] along (chain rule
    through Linear and ReLU) -> (output [N,O], d output / d x [N,O,3])."""
    for layer in net:
        if isinstance(layer, nn.Linear):
            h = layer(h)
            jac = torch.einsum("od,ndk->nok", layer.weight, jac)
        elif isinstance(layer, nn.ReLU):
            on = h > 0
            h = torch.where(on, h, torch.zeros_like(h))
            jac = jac * on[..., None].to(jac.dtype)
        else:
            raise TypeError(f"no Jacobian rule for {type(layer).__name__}")
    return h, jac


def mlp(in_dim: int, out_dim: int, hidden: int = 64, layers: int = 2) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)
