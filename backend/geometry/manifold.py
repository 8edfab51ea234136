"""A closed surface made 2-manifold, so that the exported file is watertight: every edge has
exactly two faces and every vertex one fan of faces.

Two defects reach the export, both measured on the oracle targets (docs/quality.md, "A surface
that can hold an edge"):
- an edge with four faces (or six): dual contouring's one vertex per patch where a tunnel
  thinner than a cell passes between two cells whose patches each join inside. Half the faces
  run along the edge one way and half the other (the surface is oriented), so they pair up
  into sheets of surface through the edge in one of two ways (four faces). The pairing chosen
  is the one that splits the edge's ends into one vertex per sheet (with the other one
  neither end splits and the edge keeps its four faces).
- a fin: one triangle hanging on an edge of three faces, its other two edges open. VTK's
  quadric collapse (geometry/cleanup.py) leaves one now and then, even on a 2-manifold input
  (its non-manifold output is a known issue: https://gitlab.kitware.com/vtk/vtk/-/issues/9000).
  The fin is dropped; the edge keeps the two faces that close the surface there.
Then each vertex whose faces form more than one fan (joined through edges of two faces, or the
pairs above) becomes one vertex per fan. A copy moves a hundredth of the way towards its
fan's centre, so the copies stay apart wherever vertices are welded by position (cleanup's
weld, the pieces' weld, the file's own seams).

Meshes are numpy: verts [V,3] float, faces [F,3] int, counter-clockwise outward. An open
surface's boundary is left as it is: only fins (two open edges beside an edge of three
faces) are dropped.
"""
from __future__ import annotations

import itertools

import numpy as np

# How far a split vertex's copy moves towards its fan's centre: enough to survive float32 and
# welding by exact position, far too little to see.
SPLIT_STEP = 0.01


def _edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (unique undirected edges [E,2], edge of each face slot [F,3] (slot j: vertices j, j+1),
    faces per edge [E])."""
    a, b = faces.reshape(-1).astype(np.int64), np.roll(faces, -1, axis=1).reshape(-1).astype(np.int64)
    n = int(faces.max()) + 1
    keys, slot, count = np.unique(np.minimum(a, b) * n + np.maximum(a, b), return_inverse=True, return_counts=True)
    return np.stack([keys // n, keys % n], 1), slot.reshape(-1, 3), count


def edge_defects(faces: np.ndarray) -> tuple[int, int]:
    """faces [F,3] on welded vertices -> (open edges: one face, non-manifold edges: three or more
    faces); (0, 0) for a closed surface."""
    if faces.shape[0] == 0:
        return 0, 0
    count = _edges(faces)[2]
    return int((count == 1).sum()), int((count > 2).sum())


def drop_fins(faces: np.ndarray) -> np.ndarray:
    """faces [F,3] without fins (a face with two open edges whose third edge has three or more
    faces), repeated until none is left."""
    while faces.shape[0]:
        _, slot, count = _edges(faces)
        per_face = count[slot]
        fin = ((per_face == 1).sum(1) >= 2) & (per_face >= 3).any(1)
        if not fin.any():
            break
        faces = faces[~fin]
    return faces


def _root(parent: np.ndarray, a: int) -> int:
    while parent[a] != a:
        a = parent[a]
    return a


def _union(parent: np.ndarray, a: int, b: int) -> None:
    a, b = _root(parent, a), _root(parent, b)
    parent[max(a, b)] = min(a, b)


def _pairings(faces: np.ndarray, around: np.ndarray, u: int, v: int) -> list[list[tuple[int, int]]]:
    """Every way to pair the faces `around` the edge (u, v) into sheets, each face that runs u -> v
    with one that runs v -> u; none when they do not split evenly (not an oriented surface
    there). Topological, not by angle about the edge: near a tunnel the dual vertices' offsets
    can fold the faces, and their angles no longer alternate."""
    forward = np.array([any(faces[f, j] == u and faces[f, (j + 1) % 3] == v for j in range(3)) for f in around])
    ahead, back = around[forward], around[~forward]
    if len(ahead) != len(back) or len(ahead) > 4:
        return []
    return [[(int(a), int(b)) for a, b in zip(ahead, perm)] for perm in itertools.permutations(back)]


def _fans(faces: np.ndarray, x: int, incident: np.ndarray, joins: list[tuple[int, int]]) -> int:
    """How many fans the faces `incident` to vertex x make, joined through the edges at x that
    have two faces among them and through `joins` (pairs of faces)."""
    index = {int(f): i for i, f in enumerate(incident)}
    parent = np.arange(len(incident))
    by_edge: dict[int, list[int]] = {}
    for f in incident:
        for y in faces[f]:
            if y != x:
                by_edge.setdefault(int(y), []).append(int(f))
    for fs in by_edge.values():
        if len(fs) == 2:
            _union(parent, index[fs[0]], index[fs[1]])
    for a, b in joins:
        if a in index and b in index:
            _union(parent, index[a], index[b])
    return len({_root(parent, i) for i in range(len(incident))})


def make_manifold(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """verts [V,3], faces [F,3] -> (verts [V',3], faces [F',3], source [V'] the input vertex each
    output vertex copies): fins dropped, edges of four or more faces paired into sheets, every
    vertex one fan."""
    faces = drop_fins(faces)
    if faces.shape[0] == 0:
        return verts, faces, np.arange(verts.shape[0])
    edges, slot, count = _edges(faces)
    flat = faces.reshape(-1)
    order = np.argsort(flat, kind="stable")
    by_vertex = order // 3  # the faces at each vertex, vertex after vertex
    first = np.searchsorted(flat[order], np.arange(verts.shape[0] + 1))
    # Corners (face f, slot j) = 3 f + j, joined across each edge of two faces at both ends.
    half_face = np.repeat(np.arange(faces.shape[0]), 3)
    half_slot = np.tile(np.arange(3), faces.shape[0])
    by_edge = np.argsort(slot.reshape(-1), kind="stable")
    two = np.nonzero(count == 2)[0]
    starts = np.concatenate([[0], np.cumsum(count)])[:-1]
    pairs = [(by_edge[starts[two]], by_edge[starts[two] + 1])]
    for e in np.nonzero(count > 2)[0]:
        halves = by_edge[starts[e]:starts[e] + count[e]]
        around = half_face[halves]
        u, v = edges[e]
        inc_u, inc_v = by_vertex[first[u]:first[u + 1]], by_vertex[first[v]:first[v + 1]]
        # the pairing that splits the most (with the other one of four faces neither end splits)
        best = max(_pairings(faces, around, u, v), default=None,
                   key=lambda sheets: _fans(faces, u, inc_u, sheets) + _fans(faces, v, inc_v, sheets))
        if best is None:  # not an oriented surface there: the faces stay joined, as they came
            best = [(int(around[i]), int(around[i + 1])) for i in range(len(around) - 1)]
        for a, b in best:
            ha, hb = halves[np.nonzero(around == a)[0][0]], halves[np.nonzero(around == b)[0][0]]
            pairs.append((np.array([ha]), np.array([hb])))
    ha, hb = (np.concatenate(p) for p in zip(*pairs))
    # half-edge (f, j) runs from corner j to corner j + 1; its partner runs the other way or, for a
    # badly wound pair, the same way: join the corners that hold the same vertex.
    fa, ja, fb, jb = half_face[ha], half_slot[ha], half_face[hb], half_slot[hb]
    ca = np.stack([3 * fa + ja, 3 * fa + (ja + 1) % 3], 1)
    cb = np.stack([3 * fb + jb, 3 * fb + (jb + 1) % 3], 1)
    same = flat[ca[:, 0]] == flat[cb[:, 0]]
    cb = np.where(same[:, None], cb, cb[:, ::-1])
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = flat.shape[0]
    graph = coo_matrix((np.ones(2 * len(ca), np.int8), (ca.reshape(-1), cb.reshape(-1))), shape=(n, n))
    _, fan = connected_components(graph, directed=False)
    # one output vertex per (vertex, fan); a vertex with one fan keeps its position
    keys, new = np.unique(flat.astype(np.int64) * n + fan, return_inverse=True)
    source = keys // n
    copies = np.bincount(source, minlength=verts.shape[0])[source]
    out = verts[source].astype(np.float64)
    split = np.nonzero(copies > 1)[0]
    if split.shape[0]:
        centre = verts[faces].mean(1)[np.arange(n) // 3]  # each corner's face centre
        fan_centre = np.stack([np.bincount(new.reshape(-1), weights=centre[:, k], minlength=len(keys))
                               for k in range(3)], 1) / np.bincount(new.reshape(-1), minlength=len(keys))[:, None]
        out[split] += SPLIT_STEP * (fan_centre[split] - out[split])
    return out.astype(verts.dtype), new.reshape(-1, 3), source
