"""Dual contouring of an SDF on a regular lattice, differentiable in the SDF and in a per-cell
vertex offset: the surface that can hold a sharp edge.

Marching tets puts every surface vertex on a grid edge, so an edge of the object that crosses
a cell is cut off by a facet a cell wide, and a view that sees that edge as a silhouette can
only be matched by moving both faces out (docs/quality.md, "Why the edge moves out"). Here
each cell the surface crosses has one vertex: the mean of the zero crossings on its 12 edges
(on a plane that mean lies on the plane, so flat faces are exact) plus a learned offset of up
to half a cell, which lets the vertex reach the ridge of an edge or the tip of a corner. It is
the free-offset form of FlexiCubes' dual vertex (Shen et al. 2023, "Flexible Isosurface
Extraction for Gradient-Based Mesh Optimization": their weights keep it a convex combination
of the crossings, which cannot reach a corner without their grid deformation).

Lattice: (res+1)^3 vertices over the box [lo, hi], vertex id (i * n + j) * n + k with n = res+1
(geometry/tets.tet_grid's order); cell id (i * res + j) * res + k for the cube whose lowest
corner is vertex (i, j, k). SDF negative inside.

Each lattice edge whose ends differ in sign is shared by four cells; their vertices make a
quad, split into four triangles about its centre (FlexiCubes' split: symmetric, no diagonal
to choose), wound so that the normal points outward. Two sheets meeting in one cell share its
vertex, so the mesh can be non-manifold there (a saddle at a cell's face); the border of the
lattice must be outside (DMTet holds it there), so every crossing edge has its four cells.
"""
from __future__ import annotations

import torch

# For the edges along axis a: the two other axes (b, c) in right-handed order, and the four
# cells around an edge in counter-clockwise order seen from +a, as offsets along b and c from
# the edge's lower end (a cell is named by its lowest corner).
_AROUND = ((-1, -1), (0, -1), (0, 0), (-1, 0))


def dual_contour(sdf: torch.Tensor, res: int, lo: torch.Tensor, hi: torch.Tensor, offset: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """sdf [(res+1)^3] (negative inside), lo / hi [3] the box, offset [res^3, 3] each cell's
    vertex offset from the mean of its crossings (world units) -> verts [M,3], faces [K,3]
    (outward, counter-clockwise). verts: the cells' vertices, then the quads' centres."""
    device = sdf.device
    n = res + 1
    cell = (hi - lo) / res
    inside = (sdf < 0).reshape(n, n, n)
    sums = torch.zeros(res ** 3, 3, device=device, dtype=sdf.dtype)
    counts = torch.zeros(res ** 3, device=device, dtype=sdf.dtype)
    quads = []
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
            step = n ** (2 - a)
            v0 = (ijk[:, 0] * n + ijk[:, 1]) * n + ijk[:, 2]
            around = []
            for db, dc in _AROUND:
                q = ijk.clone()
                q[:, b] += db
                q[:, c] += dc
                around.append((q[:, 0] * res + q[:, 1]) * res + q[:, 2])
            cells = torch.stack(around, dim=-1)  # [E,4]
            cells = torch.where(flip[:, None], cells.flip(-1), cells)
        s0, s1 = sdf[v0], sdf[v0 + step]
        t = s0 / (s0 - s1)
        point = lo + ijk.to(sdf.dtype) * cell
        point = torch.cat([point[:, :a], point[:, a:a + 1] + t[:, None] * cell[a], point[:, a + 1:]], dim=-1)
        sums = sums.index_add(0, cells.reshape(-1), point.repeat_interleave(4, dim=0))
        counts = counts.index_add(0, cells.reshape(-1), torch.ones(cells.numel(), device=device, dtype=sdf.dtype))
        quads.append(cells)
    quads = torch.cat(quads)
    if quads.shape[0] == 0:
        return sdf.new_zeros(0, 3), torch.zeros(0, 3, dtype=torch.long, device=device)
    used, quads = torch.unique(quads, return_inverse=True)  # mesh vertex i is cell used[i]
    dual = sums[used] / counts[used, None] + offset[used]
    centres = dual[quads].mean(1)  # [Q,3]
    centre = torch.arange(quads.shape[0], device=device) + used.shape[0]
    faces = torch.stack([torch.stack([quads[:, i], quads[:, (i + 1) % 4], centre], dim=-1) for i in range(4)], dim=1)
    return torch.cat([dual, centres]), faces.reshape(-1, 3)
