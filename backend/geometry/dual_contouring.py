"""Dual contouring of an SDF on a regular lattice, differentiable in the SDF and in a per-cell
vertex offset: the surface that can hold a sharp edge.

Marching tets puts every surface vertex on a grid edge, so an edge of the object that crosses
a cell is cut off by a facet a cell wide, and a view that sees that edge as a silhouette can
only be matched by moving both faces out (docs/quality.md, "Why the edge moves out"). Here
each patch of surface in a cell has one vertex: the mean of the zero crossings on the cell
edges it cuts (on a plane that mean lies on the plane, so flat faces are exact) plus a learned
offset of up to half a cell, which lets the vertex reach the ridge of an edge or the tip of a
corner. It is the free-offset form of FlexiCubes' dual vertex (Shen et al. 2023, "Flexible
Isosurface Extraction for Gradient-Based Mesh Optimization": their weights keep it a convex
combination of the crossings, which cannot reach a corner without their grid deformation).

Lattice: (res+1)^3 vertices over the box [lo, hi], vertex id (i * n + j) * n + k with n = res+1
(geometry/tets.tet_grid's order); cell id (i * res + j) * res + k for the cube whose lowest
corner is vertex (i, j, k). SDF negative inside. The lattice's border must be outside (DMTet
holds it there), so every crossing edge has its four cells.

Each lattice edge whose ends differ in sign is shared by four cells; their vertices make a
quad, split into four triangles about its centre (FlexiCubes' split: symmetric, no diagonal to
choose), wound so that the normal points outward. A cell the surface cuts twice (two inside
corners diagonal on one of its faces, or opposite in the cube) has a vertex per patch, as
FlexiCubes does: a cube face with four crossings joins each inside corner's two edges, the
same rule seen from both cells that share the face. The mesh is then closed and 2-manifold but
where both cells beside such a face join their two patches inside (a tunnel thinner than a
cell): that face's dual edge has 4 faces (0-2 in 90-180k faces in the oracle runs,
docs/quality.md).
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

# For the edges along axis a: the two other axes (b, c) in right-handed order, and the four
# cells around an edge in counter-clockwise order seen from +a, as offsets along b and c from
# the edge's lower end (a cell is named by its lowest corner).
_AROUND = ((-1, -1), (0, -1), (0, 0), (-1, 0))


def _edge_id(a: int, corner: tuple[int, int, int]) -> int:
    """A cube's edge along axis a through a corner (offsets 0/1 per axis): a * 4 + ob * 2 + oc,
    ob and oc its offsets along the axes after a (b = a + 1, c = a + 2, mod 3)."""
    return a * 4 + corner[(a + 1) % 3] * 2 + corner[(a + 2) % 3]


def _patch_table() -> np.ndarray:
    """[256, 12] for each inside-corner pattern (bit di * 4 + dj * 2 + dk per corner), the patch
    of surface each crossing edge belongs to (0..3; -1: the edge does not cross)."""
    corners = list(itertools.product((0, 1), repeat=3))
    table = -np.ones((256, 12), dtype=np.int64)
    for case in range(256):
        inside = {o: bool(case >> (o[0] * 4 + o[1] * 2 + o[2]) & 1) for o in corners}
        crossing = {}
        for o in corners:
            for a in range(3):
                if o[a] == 0:
                    p = list(o)
                    p[a] = 1
                    if inside[o] != inside[tuple(p)]:
                        crossing[_edge_id(a, o)] = True
        parent = {e: e for e in crossing}

        def root(e: int) -> int:
            while parent[e] != e:
                e = parent[e]
            return e

        for f, side in itertools.product(range(3), (0, 1)):
            face = [o for o in corners if o[f] == side]
            # a face corner's two edges in the face: along the two axes other than f
            edges_of = {o: [_edge_id(a, tuple(0 if x == a else o[x] for x in range(3))) for a in range(3) if a != f]
                        for o in face}
            cut = [e for e in {e for es in edges_of.values() for e in es} if e in crossing]
            if len(cut) == 2:
                parent[root(cut[0])] = root(cut[1])
            elif len(cut) == 4:  # two inside corners diagonal: each joins its own two edges
                for o in face:
                    if inside[o]:
                        e0, e1 = edges_of[o]
                        parent[root(e0)] = root(e1)
        roots = sorted({root(e) for e in crossing})
        for e in crossing:
            table[case, e] = roots.index(root(e))
    return table


PATCH_TABLE = torch.from_numpy(_patch_table())


def dual_contour(sdf: torch.Tensor, res: int, lo: torch.Tensor, hi: torch.Tensor, offset: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """sdf [(res+1)^3] (negative inside), lo / hi [3] the box, offset [res^3, 3] each cell's
    vertex offset from the mean of its crossings (world units) -> verts [M,3], faces [K,3]
    (outward, counter-clockwise). verts: the patches' vertices, then the quads' centres."""
    device = sdf.device
    n = res + 1
    cell = (hi - lo) / res
    points, keys = [], []
    with torch.no_grad():
        inside = (sdf < 0).reshape(n, n, n)
        case = torch.zeros(res, res, res, dtype=torch.long, device=device)
        for di, dj, dk in itertools.product((0, 1), repeat=3):
            case |= inside[di:di + res, dj:dj + res, dk:dk + res].long() << (di * 4 + dj * 2 + dk)
        case = case.reshape(-1)
        patches = PATCH_TABLE.to(device)
    for a in range(3):
        b, c = (a + 1) % 3, (a + 2) % 3
        with torch.no_grad():
            lower = [slice(None)] * 3
            upper = [slice(None)] * 3
            lower[a], upper[a] = slice(0, n - 1), slice(1, n)
            flip = inside[tuple(upper)]
            cross = inside[tuple(lower)] != flip
            ijk = torch.nonzero(cross)  # [E,3] lattice index of each crossing edge's lower end
            flip = flip[cross]  # inside at the upper end: the outward normal points along -a
            v0 = (ijk[:, 0] * n + ijk[:, 1]) * n + ijk[:, 2]
            around = []
            for db, dc in _AROUND:
                q = ijk.clone()
                q[:, b] += db
                q[:, c] += dc
                cid = (q[:, 0] * res + q[:, 1]) * res + q[:, 2]
                local = a * 4 + (-db) * 2 + (-dc)  # this edge among the cell's 12 (_edge_id)
                around.append(cid * 4 + patches[case[cid], local])  # the patch's vertex key
            quad = torch.stack(around, dim=-1)  # [E,4]
            quad = torch.where(flip[:, None], quad.flip(-1), quad)
        s0, s1 = sdf[v0], sdf[v0 + n ** (2 - a)]
        t = s0 / (s0 - s1)
        point = lo + ijk.to(sdf.dtype) * cell
        point = torch.cat([point[:, :a], point[:, a:a + 1] + t[:, None] * cell[a], point[:, a + 1:]], dim=-1)
        points.append(point)
        keys.append(quad)
    quads = torch.cat(keys)
    if quads.shape[0] == 0:
        return sdf.new_zeros(0, 3), torch.zeros(0, 3, dtype=torch.long, device=device)
    used, quads = torch.unique(quads, return_inverse=True)  # mesh vertex i is patch used[i]
    crossings = torch.cat(points).repeat_interleave(4, dim=0)  # each crossing to its four patches
    sums = torch.zeros(used.shape[0], 3, device=device, dtype=sdf.dtype).index_add(0, quads.reshape(-1), crossings)
    counts = torch.zeros(used.shape[0], device=device, dtype=sdf.dtype).index_add(
        0, quads.reshape(-1), torch.ones(quads.numel(), device=device, dtype=sdf.dtype))
    dual = sums / counts[:, None] + offset[used // 4]
    centres = dual[quads].mean(1)  # [Q,3]
    centre = torch.arange(quads.shape[0], device=device) + used.shape[0]
    faces = torch.stack([torch.stack([quads[:, i], quads[:, (i + 1) % 4], centre], dim=-1) for i in range(4)], dim=1)
    return torch.cat([dual, centres]), faces.reshape(-1, 3)
