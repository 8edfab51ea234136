"""Tetrahedral grids generated at run time, and marching tetrahedra.

Grid: (res+1)^3 vertices over an axis-aligned box, each cube split into 6 tetrahedra
around its main diagonal (Freudenthal/Kuhn), every tet positively oriented:
det(v1-v0, v2-v0, v3-v0) > 0.

SDF convention: negative inside. Marching tets emits triangles whose counter-clockwise
normal points from inside to outside (outward). The case table is derived at import time
from a reference positive tet, so its winding is correct by construction (and tested).
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def tet_grid(res: int, lo: torch.Tensor | list[float] = (-1.0, -1.0, -1.0),
             hi: torch.Tensor | list[float] = (1.0, 1.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """-> vertices [(res+1)^3, 3] float, tets [6*res^3, 4] long."""
    lo, hi = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
    ax = torch.arange(res + 1)
    ijk = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1).reshape(-1, 3)
    verts = lo + (hi - lo) * ijk.float() / res
    n = res + 1
    vid = lambda i, j, k: (i * n + j) * n + k  # noqa: E731
    cube = torch.stack(torch.meshgrid(torch.arange(res), torch.arange(res), torch.arange(res),
                                      indexing="ij"), dim=-1).reshape(-1, 3)
    unit = torch.eye(3, dtype=torch.long)
    tets = []
    for perm in itertools.permutations(range(3)):
        path = [torch.zeros(3, dtype=torch.long)]
        for axis in perm:
            path.append(path[-1] + unit[axis])
        corners = [cube + p for p in path]
        tets.append(torch.stack([vid(c[:, 0], c[:, 1], c[:, 2]) for c in corners], dim=-1))
    tets = torch.cat(tets)
    # Orientation depends only on the permutation's parity: fix negatives by a swap.
    v = verts[tets]
    det = torch.linalg.det(torch.stack([v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], v[:, 3] - v[:, 0]], dim=-1))
    neg = det < 0
    tets[neg] = tets[neg][:, [0, 2, 1, 3]]
    return verts, tets


def _case_table() -> np.ndarray:
    """[16, 6] local edge ids (two triangles, -1 padded) per inside-bit pattern."""
    ref = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    table = -np.ones((16, 6), dtype=np.int64)
    for case in range(16):
        inside = [i for i in range(4) if case >> i & 1]
        outside = [i for i in range(4) if not case >> i & 1]
        if len(inside) in (0, 4):
            continue
        crossing = [e for e, (a, b) in enumerate(TET_EDGES) if (a in inside) != (b in inside)]
        if len(crossing) == 3:
            loops = [crossing]
        else:  # quad: walk the cycle in -> out -> in -> out
            a, b = inside
            c, d = outside
            eid = lambda p, q: TET_EDGES.index((min(p, q), max(p, q)))  # noqa: E731
            cyc = [eid(a, c), eid(a, d), eid(b, d), eid(b, c)]
            loops = [[cyc[0], cyc[1], cyc[2]], [cyc[0], cyc[2], cyc[3]]]
        outward = ref[outside].mean(0) - ref[inside].mean(0)
        tris = []
        for loop in loops:
            p = [ref[list(TET_EDGES[e])].mean(0) for e in loop]
            if np.dot(np.cross(p[1] - p[0], p[2] - p[0]), outward) < 0:
                loop = [loop[0], loop[2], loop[1]]
            tris.extend(loop)
        table[case, : len(tris)] = tris
    return table


CASE_TABLE = torch.from_numpy(_case_table())


# Triangles a case emits (0, 1 or 2): the face count is known before the faces are made.
TRIS_PER_CASE = (CASE_TABLE.reshape(16, 2, 3)[..., 0] >= 0).sum(-1)


def tet_edges(tets: torch.Tensor, n_verts: int) -> torch.Tensor:
    """The grid's edges, each once: [E,2] vertex ids (low, high), ordered by
    low * n_verts + high. Fixed for a grid: made once, outside the steps."""
    pairs = torch.sort(tets[:, torch.tensor(TET_EDGES, device=tets.device)].reshape(-1, 2), dim=-1).values
    keys = torch.unique(pairs[:, 0].long() * n_verts + pairs[:, 1].long())  # 1-D: far cheaper than rows
    return torch.stack([keys // n_verts, keys % n_verts], dim=-1).to(tets.dtype)


# The 7 edge directions of tet_grid's Kuhn split (every edge joins a vertex to vertex + d,
# d one of these, so its low id is the first end): the axes, the face diagonals, the main diagonal.
GRID_EDGE_STEPS = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 0, 1), (1, 1, 1))


def grid_surface(sdf: torch.Tensor, res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For tet_grid(res)'s layout, sdf [(res+1)^3] (negative inside) -> (ids [S] ascending of
    the tets of every cube whose corners' signs differ, the grid edges [M,2] whose ends' signs
    differ, in tet_edges' order). marching_tets(verts, tets[ids], sdf, edges) then makes the
    same mesh as over the whole grid: a tet outside those cubes has one sign at all corners.
    Found with dense slices of the (res+1)^3 lattice, not gathers over all 6 res^3 tets (on
    a CPU at res 96 those were 290 ms a step)."""
    n = res + 1
    inside = (sdf < 0).reshape(n, n, n)
    corners = torch.zeros(res, res, res, dtype=torch.uint8, device=sdf.device)
    for di, dj, dk in itertools.product((0, 1), repeat=3):
        corners += inside[di:di + res, dj:dj + res, dk:dk + res]
    cubes = torch.nonzero(((corners > 0) & (corners < 8)).reshape(-1))[:, 0]
    # tet_grid stacks one tet per cube for each of the 6 paths: tet id = path * res^3 + cube
    ids = (torch.arange(6, device=sdf.device)[:, None] * res ** 3 + cubes).reshape(-1)
    vid = torch.arange(n ** 3, device=sdf.device).reshape(n, n, n)
    keys = []
    for di, dj, dk in GRID_EDGE_STEPS:
        lo = (slice(0, n - di), slice(0, n - dj), slice(0, n - dk))
        hi = (slice(di, n), slice(dj, n), slice(dk, n))
        low = vid[lo][inside[lo] != inside[hi]]
        keys.append(low * n ** 3 + low + (di * n + dj) * n + dk)  # tet_edges' key: low * verts + high
    keys = torch.sort(torch.cat(keys)).values
    return ids, torch.stack([keys // n ** 3, keys % n ** 3], dim=-1)


def marching_tets(verts: torch.Tensor, tets: torch.Tensor, sdf: torch.Tensor,
                  edges: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """verts [N,3], tets [T,4], sdf [N] (negative inside) -> mesh verts [M,3], faces [K,3].
    edges: the grid's tet_edges (made here when not given).

    Surface vertices are linear SDF-zero crossings on tet edges, so gradients flow to both
    vertex positions and SDF values. The host reads the sizes once (surface tets, crossing
    edges, faces: one transfer); every selection after it has a known size."""
    device = verts.device
    n = int(verts.shape[0])
    edges = tet_edges(tets, n) if edges is None else edges
    with torch.no_grad():
        inside = sdf < 0
        # case codes in uint8: an int64 product over [T,4] was half this function's time
        bits = torch.tensor([1, 2, 4, 8], dtype=torch.uint8, device=device)
        case = (inside[tets].to(torch.uint8) * bits).sum(-1, dtype=torch.uint8).long()
        valid = (case > 0) & (case < 15)
        cross = inside[edges[:, 0]] != inside[edges[:, 1]]
        n_valid, n_cross, n_faces = torch.stack([valid.sum(), cross.sum(),
                                                 TRIS_PER_CASE.to(device)[case].sum()]).tolist()
        if n_faces == 0:
            return verts.new_zeros(0, 3), torch.zeros(0, 3, dtype=torch.long, device=device)
        surface = torch.nonzero_static(valid, size=n_valid)[:, 0]
        crossing = torch.nonzero_static(cross, size=n_cross)[:, 0]
        ends = edges[crossing].long().T  # [2,M] in key order: mesh vertex i is crossing edge i
        keys = ends[0] * n + ends[1]
        tv = tets[surface]
        pairs = torch.sort(tv[:, torch.tensor(TET_EDGES, device=device)], dim=-1).values  # [Tv,6,2]
        # Each surface tet's edges as mesh vertices: their place among the crossing keys.
        tet_edge_vid = torch.searchsorted(keys, pairs[..., 0] * n + pairs[..., 1])  # [Tv,6]
        local = CASE_TABLE.to(device)[case[surface]]  # [Tv,6]
        tri_ok = local.reshape(-1, 2, 3)[..., 0] >= 0
        gathered = torch.gather(tet_edge_vid, 1, local.clamp(min=0)).reshape(-1, 3)
        faces = gathered[torch.nonzero_static(tri_ok.reshape(-1), size=n_faces)[:, 0]]
    s0, s1 = sdf[ends[0]], sdf[ends[1]]
    t = (s0 / (s0 - s1))[:, None]
    mesh_verts = verts[ends[0]] + (verts[ends[1]] - verts[ends[0]]) * t
    return mesh_verts, faces
