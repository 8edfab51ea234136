"""Signed distance of points to a triangle mesh: sign from the generalised winding number
(robust to holes and non-manifold input), magnitude from dense surface samples.
SDF is negative inside."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree


def winding_number(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor,
                   chunk: int = 1 << 22) -> torch.Tensor:
    """[N,3] points -> [N] generalised winding numbers (~1 inside, ~0 outside) using the
    Van Oosterom-Strackee solid angle of every triangle."""
    tri = verts[faces]  # [F,3,3]
    out = torch.zeros(points.shape[0], dtype=points.dtype, device=points.device)
    step = max(1, chunk // max(faces.shape[0], 1))
    for s in range(0, points.shape[0], step):
        p = points[s:s + step, None, None, :]
        r = tri[None] - p  # [n,F,3,3]
        a, b, c = r[..., 0, :], r[..., 1, :], r[..., 2, :]
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        det = (a * torch.linalg.cross(b, c)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out[s:s + step] = (2 * torch.atan2(det, den)).sum(-1) / (4 * math.pi)
    return out


def sample_surface(verts: torch.Tensor, faces: torch.Tensor, count: int, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform over the surface area: -> face index [count], barycentrics [count,3]."""
    g = torch.Generator().manual_seed(seed)
    tri = verts[faces].cpu()
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)
    idx = torch.multinomial(area + 1e-20, count, replacement=True, generator=g)
    u, v = torch.rand(count, generator=g), torch.rand(count, generator=g)
    flip = u + v > 1
    u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    return idx, torch.stack([1 - u - v, u, v], -1)


def surface_samples(verts: torch.Tensor, faces: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """[count,3] points uniformly distributed over the surface area."""
    idx, bary = sample_surface(verts, faces, count, seed)
    return (verts.cpu()[faces.cpu()[idx]] * bary[..., None]).sum(1)


def mesh_sdf(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, samples: int = 200_000,
             sign_mesh: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """[N,3] -> [N] signed distance (negative inside). sign_mesh: a lighter (verts, faces)
    for the winding number, whose cost grows with points x faces."""
    surf = surface_samples(verts, faces, samples).numpy()
    dist, _ = cKDTree(surf).query(points.detach().cpu().numpy(), workers=-1)
    sv, sf = sign_mesh if sign_mesh is not None else (verts, faces)
    inside = winding_number(points.cpu(), sv.cpu(), sf.cpu()) > 0.5
    d = torch.from_numpy(np.asarray(dist, dtype=np.float32))
    return torch.where(inside, -d, d).to(points.device)
