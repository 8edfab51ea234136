"""geometry/manifold.py: a closed surface with edges of four faces and fins comes out closed and
2-manifold (every edge two faces, every vertex's link one cycle), oriented as it came. Checked
with the textbook definitions, written here independently of the module: an edge's face count,
a vertex's link (the opposite edges of its faces) a single cycle."""
from collections import defaultdict

import numpy as np
import torch
import trimesh

from backend.geometry.cleanup import cleanup
from backend.geometry.dual_contouring import dual_contour
from backend.geometry.manifold import SPLIT_STEP, drop_fins, edge_defects, make_manifold


def closed_two_manifold(faces: np.ndarray) -> bool:
    edges = defaultdict(int)
    link = defaultdict(list)
    for a, b, c in faces.tolist():
        for u, v, w in ((a, b, c), (b, c, a), (c, a, b)):
            edges[frozenset((u, v))] += 1
            link[u].append((v, w))
    if any(n != 2 for n in edges.values()):
        return False
    for pairs in link.values():  # one cycle: every link vertex of degree 2, all of them connected
        degree = defaultdict(int)
        nbr = defaultdict(set)
        for v, w in pairs:
            degree[v] += 1
            degree[w] += 1
            nbr[v].add(w)
            nbr[w].add(v)
        if any(d != 2 for d in degree.values()):
            return False
        start = next(iter(nbr))
        seen, todo = {start}, [start]
        while todo:
            for y in nbr[todo.pop()] - seen:
                seen.add(y)
                todo.append(y)
        if len(seen) != len(nbr):
            return False
    return True


def cube(lo: tuple[float, float, float]) -> trimesh.Trimesh:
    return trimesh.creation.box(bounds=[lo, np.add(lo, 1.0)])


def test_two_cubes_on_one_edge_come_apart_into_two_closed_cubes():
    """Unit cubes [0,1]^3 and [1,2]x[1,2]x[0,1] share the edge x = y = 1: four faces on it, its
    two ends each on two cubes. Paired by cube, the ends split and the result is the two cubes,
    16 vertices, each closed, volume 1 (to the split's step); paired across, nothing would split."""
    a, b = cube((0, 0, 0)), cube((1, 1, 0))
    both = trimesh.util.concatenate([a, b])
    both.merge_vertices()
    verts, faces = np.asarray(both.vertices), np.asarray(both.faces)
    assert (len(verts), edge_defects(faces)) == (14, (0, 1))
    v, f, source = make_manifold(verts, faces)
    assert len(v) == 16 and len(f) == 24 and closed_two_manifold(f)
    parts = trimesh.Trimesh(v, f, process=False).split(only_watertight=False)
    assert len(parts) == 2 and all(p.is_winding_consistent for p in parts)
    assert all(abs(p.volume - 1.0) < 0.02 for p in parts)
    # each copy of a shared end moved SPLIT_STEP of the way to its own cube's faces' centre
    moved = np.nonzero(np.linalg.norm(v - verts[source], axis=1) > 0)[0]
    assert len(moved) == 4 and set(source[moved]) == set(np.nonzero(np.isclose(verts[:, :2], 1).all(1))[0])
    for i in moved:
        fan = source[f[(f == i).any(1)]]  # its faces, in the input's vertices
        centre = verts[fan].mean(1).mean(0)
        original = verts[source[i]]
        assert np.allclose(v[i], original + SPLIT_STEP * (centre - original), atol=1e-12)
        assert (v[i, :2] < 1).all() or (v[i, :2] > 1).all()  # into its own cube


def test_a_fin_on_a_closed_cube_is_dropped_and_an_open_sheet_is_kept():
    box = cube((0, 0, 0))
    verts, faces = np.asarray(box.vertices), np.asarray(box.faces)
    u, v = faces[0, 0], faces[0, 1]
    fin = np.vstack([verts, [[5.0, 5.0, 5.0]]])
    with_fin = np.vstack([faces, [[u, v, len(verts)]]])
    assert edge_defects(with_fin) == (2, 1)
    assert np.array_equal(drop_fins(with_fin), faces)
    out_v, out_f, _ = make_manifold(fin, with_fin)
    assert closed_two_manifold(out_f) and len(out_f) == 12 and not (out_v == 5.0).all(1).any()
    square = np.array([[0, 1, 2], [0, 2, 3]])
    assert np.array_equal(drop_fins(square), square)  # a boundary's corner is not a fin


def _random_lattice(seed: int, res: int) -> tuple[np.ndarray, np.ndarray]:
    n = res + 1
    s = np.random.default_rng(seed).uniform(-1, 1, (n, n, n)) + 0.3
    s[[0, -1]] = s[:, [0, -1]] = s[:, :, [0, -1]] = 1.0  # the border outside, as DMTet holds it
    sdf = torch.tensor(s.reshape(-1), dtype=torch.float64)
    box = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    v, f = dual_contour(sdf, res, *box, torch.zeros(res ** 3, 3, dtype=torch.float64))
    return v.numpy(), f.numpy()


def test_dual_contouring_of_random_lattices_comes_out_closed_two_manifold():
    """Random signs on a 5^3 lattice make tunnels thinner than a cell: 9 of these 300 have an edge
    of four faces (dual contouring's one vertex per patch). Every one comes out closed and
    2-manifold, outward, enclosing the volume it did (the split's step moves it by under 1%)."""
    fixed = 0
    for seed in range(300):
        v, f = _random_lattice(seed, 5)
        if f.shape[0] == 0:
            continue
        before = edge_defects(f)
        out_v, out_f, _ = make_manifold(v, f)
        assert closed_two_manifold(out_f), seed
        mesh = trimesh.Trimesh(out_v, out_f, process=False)
        assert mesh.is_winding_consistent and mesh.volume > 0, seed
        assert abs(mesh.volume - trimesh.Trimesh(v, f, process=False).volume) < 0.01 * mesh.volume, seed
        fixed += before[1] > 0
    assert fixed == 9


def test_cleanup_keeps_a_split_apart_and_decimates_to_a_closed_surface():
    """cleanup welds by position: the split's copies stay apart through it, and its decimated
    result is closed and 2-manifold."""
    v, f = _random_lattice(12, 5)
    assert edge_defects(f)[1] == 1
    cv, cf, _ = cleanup(torch.from_numpy(v), torch.from_numpy(f), f.shape[0])
    assert closed_two_manifold(cf.numpy()) and cf.shape[0] == f.shape[0]
    sphere = trimesh.creation.icosphere(5)
    dv, df, _ = cleanup(torch.from_numpy(sphere.vertices), torch.from_numpy(sphere.faces), 2000)
    assert df.shape[0] <= 2000 and closed_two_manifold(df.numpy())
