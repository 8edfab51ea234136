import numpy as np
import pytest
import torch
import trimesh

from backend.geometry.dmtet import OUTSIDE, DMTet, dmtet_from_density
from backend.geometry.dual_contouring import dual_contour
from backend.geometry.surfaces import DMTetSurface
from backend.geometry.hashgrid import HashGrid
from backend.geometry.fields import FieldConfig, NeRFField
from backend.geometry.mesh import face_normals
from backend.geometry.mesh_sdf import mesh_sdf, winding_number
from backend.geometry.regularizers import (laplacian_smoothness, normal_consistency, orientation,
                                           sdf_sign_entropy, z_variance)
from backend.geometry.tets import CASE_TABLE, grid_surface, marching_tets, tet_edges, tet_grid


def test_tet_grid_is_positively_oriented_and_fills_the_box():
    verts, tets = tet_grid(3, [-1, -1, -1], [1, 1, 1])
    v = verts[tets]
    det = torch.linalg.det(torch.stack([v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], v[:, 3] - v[:, 0]], dim=-1))
    assert (det > 0).all()
    assert torch.isclose((det / 6).sum(), torch.tensor(8.0))  # volumes add up to the box


def test_marching_tets_winding_is_outward_for_every_case():
    # One positive tet, every inside/outside pattern: normals point from inside to outside.
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    tets = torch.tensor([[0, 1, 2, 3]])
    for case in range(1, 15):
        sdf = torch.tensor([-1.0 if case >> i & 1 else 1.0 for i in range(4)])
        mv, mf = marching_tets(verts, tets, sdf)
        assert mf.shape[0] == (1 if bin(case).count("1") in (1, 3) else 2)
        inside = verts[sdf < 0].mean(0)
        outside = verts[sdf > 0].mean(0)
        n = face_normals(mv, mf)
        assert ((n @ (outside - inside)) > 0).all(), case
    assert (CASE_TABLE[0] == -1).all() and (CASE_TABLE[15] == -1).all()


def test_marching_tets_sphere_is_closed_and_outward():
    verts, tets = tet_grid(16)
    sdf = verts.norm(dim=-1) - 0.6
    mv, mf = marching_tets(verts, tets, sdf)
    tm = trimesh.Trimesh(mv.numpy(), mf.numpy())
    tm.merge_vertices()
    assert tm.is_watertight
    assert abs(tm.volume - 4 / 3 * np.pi * 0.6 ** 3) / (4 / 3 * np.pi * 0.6 ** 3) < 0.05  # positive = outward


@pytest.mark.parametrize("res", [1, 5, 12])
def test_grid_surface_makes_the_whole_grids_mesh(res):
    # grid_surface keeps only the tets of mixed cubes and the crossing edges; the mesh must
    # equal marching over every tet and every edge, vertex for vertex and face for face:
    # a random SDF (sign changes everywhere), a sphere, and an all-outside grid.
    verts, tets = tet_grid(res, [-1, -0.5, -1], [1, 1.5, 0.5])
    g = torch.Generator().manual_seed(res)
    for sdf in (torch.randn(verts.shape[0], generator=g), verts.norm(dim=-1) - 0.6, torch.ones(verts.shape[0])):
        ids, crossing = grid_surface(sdf, res)
        whole = marching_tets(verts, tets, sdf, tet_edges(tets, verts.shape[0]))
        part = marching_tets(verts, tets[ids], sdf, crossing)
        assert torch.equal(whole[0], part[0]) and torch.equal(whole[1], part[1])
        every = tet_edges(tets, verts.shape[0])
        assert torch.equal(crossing, every[(sdf < 0)[every[:, 0]] != (sdf < 0)[every[:, 1]]])


def test_dmtet_marches_the_surface_cells_on_a_cpu_and_the_whole_grid_when_asked():
    from backend.perf.tracker import Tracker

    d = DMTet(10, [-1] * 3, [1] * 3)
    d.set_sdf(lambda v: v.norm(dim=-1) - 0.6)
    assert not d.uses_whole_grid()  # by device: a CPU
    part = d()
    d.whole_grid = True  # what the estimator sets, standing for a GPU
    d.edges()  # made before the steps (DMTetSurface.prepare)
    with Tracker() as tr:
        whole = d()
    assert tr.syncs == 1  # the GPU's one host read a step (grid_surface would add 8)
    assert torch.equal(part[0], whole[0]) and torch.equal(part[1], whole[1])


def test_marching_tets_gradients_match_finite_differences():
    # The surface point on an edge (a, b) is a + (b - a) s_a / (s_a - s_b): smooth in the
    # SDF and the positions while no sign flips, so central differences must agree.
    verts, tets = tet_grid(4)
    sdf = (verts.norm(dim=-1) - 0.53).double().requires_grad_(True)  # no grid vertex on the surface
    v = verts.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s, p: marching_tets(p, tets, s)[0], (sdf, v), eps=1e-6, atol=1e-5)


def _box_sdf(p: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    q = p.abs() - half
    return q.clamp(min=0).norm(dim=-1) + q.max(-1).values.clamp(max=0)


def test_dual_contouring_sphere_is_closed_outward_and_on_the_sphere():
    d = DMTet(16, [-1] * 3, [1] * 3, surface="dual")
    d.set_sdf(lambda p: p.norm(dim=-1) - 0.6)
    mv, mf = d()
    tm = trimesh.Trimesh(mv.detach().numpy(), mf.numpy(), process=False)
    assert tm.is_watertight and tm.is_winding_consistent
    assert abs(tm.volume - 4 / 3 * np.pi * 0.6 ** 3) / (4 / 3 * np.pi * 0.6 ** 3) < 0.05  # positive = outward
    # |p| - r is convex along an edge, so each linear crossing lies on or inside the sphere, and
    # so do the cells' vertices (their means) and the quads' centres (means of those). All of a
    # centre's crossings lie in the 2 x 2 x 1 cells around its edge, 3 cells (0.375) across at
    # most: no deeper than that chord's sag.
    r = mv.norm(dim=-1)
    assert r.max() <= 0.6 + 1e-6 and r.min() >= np.sqrt(0.6 ** 2 - (3 * 0.125 / 2) ** 2)


def test_dual_contouring_holds_a_boxs_edges_and_corners_with_the_right_offsets():
    # A box whose faces cut through cells. Each cell's vertex moved to where its crossings'
    # planes meet (dual contouring's QEF with the box's exact normals: a face plane that cuts
    # the cell fixes that coordinate) makes the surface the box itself, so the enclosed volume
    # is the box's 8 hx hy hz. Marching tets, and the crossings' mean alone, cut its edges.
    torch.set_default_dtype(torch.float64)
    try:
        res, lo, hi = 16, torch.full((3,), -1.0), torch.full((3,), 1.0)
        half, cell = torch.tensor([0.53, 0.41, 0.29]), (hi - lo) / res
        verts, tets = tet_grid(res, lo, hi)
        sdf = _box_sdf(verts, half)
        mean, faces = dual_contour(sdf, res, lo, hi, torch.zeros(res ** 3, 3))
        cells = mean.shape[0] - faces.shape[0] // 4  # the cells' vertices come first, then the quads' centres
        mean = mean[:cells]
        ijk = ((mean - lo) / cell).floor().long()  # every mean is strictly inside its cell here
        corner = lo + ijk * cell
        ridge = mean.clone()
        for plane in (-half, half):
            cuts = (corner < plane) & (plane < corner + cell)
            ridge = torch.where(cuts, plane.expand_as(ridge), ridge)
        offset = torch.zeros(res ** 3, 3)
        offset[(ijk[:, 0] * res + ijk[:, 1]) * res + ijk[:, 2]] = ridge - mean
        assert (offset.abs() <= cell / 2).all()  # within DMTet's tanh bound
        sharp = trimesh.Trimesh(*(t.numpy() for t in dual_contour(sdf, res, lo, hi, offset)), process=False)
        box = 8 * half.prod().item()
        assert sharp.is_watertight and abs(sharp.volume - box) < 1e-12
        assert np.allclose(sharp.bounds, [(-half).numpy(), half.numpy()], atol=1e-12)
        rounded = trimesh.Trimesh(*(t.numpy() for t in dual_contour(sdf, res, lo, hi, torch.zeros(res ** 3, 3))),
                                  process=False)
        tets_mesh = trimesh.Trimesh(*(t.numpy() for t in marching_tets(verts, tets, sdf)))
        assert rounded.volume < box - 1e-3 and tets_mesh.volume < box - 1e-3  # 0.485 and 0.496
    finally:
        torch.set_default_dtype(torch.float32)


def test_dual_contouring_gives_each_patch_of_a_cell_its_own_vertex():
    # Two inside lattice points diagonal on a cube face: the two cells that share that face
    # are each cut twice. One vertex per cell would join the two surfaces there (edges of 4
    # faces); one per patch gives two closed surfaces, each 6 quads (its 6 crossing edges) of 4
    # triangles about 8 patch vertices: 48 faces and 16 + 12 vertices.
    res, n = 4, 5
    sdf = torch.ones(n, n, n)
    sdf[1, 1, 1] = sdf[2, 2, 1] = -1.0
    verts, faces = dual_contour(sdf.reshape(-1), res, torch.zeros(3), torch.full((3,), 4.0), torch.zeros(res ** 3, 3))
    assert faces.shape[0] == 48 and verts.shape[0] == 28
    tm = trimesh.Trimesh(verts.numpy(), faces.numpy(), process=False)
    parts = tm.split(only_watertight=False)
    assert len(parts) == 2 and all(p.is_watertight and p.volume > 0 for p in parts)
    centres = sorted(tuple(np.round(p.vertices.mean(0), 6)) for p in parts)
    assert np.allclose(centres, [(1, 1, 1), (2, 2, 1)])  # each around its own point


def test_dual_contouring_gradients_match_finite_differences():
    # A cell's vertex is the mean of crossings a + (b - a) s_a / (s_a - s_b) plus its offset:
    # smooth in both while no sign flips.
    verts, _ = tet_grid(4)
    lo, hi = torch.full((3,), -1.0, dtype=torch.float64), torch.full((3,), 1.0, dtype=torch.float64)
    sdf = (verts.norm(dim=-1) - 0.53).double().clamp(max=1.0)
    border = (verts.abs() == 1).any(-1)
    sdf = torch.where(border, OUTSIDE, sdf).requires_grad_(True)
    offset = (0.1 * torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s, o: dual_contour(s, 4, lo, hi, o)[0], (sdf, offset), eps=1e-6, atol=1e-5)


def test_dual_dmtet_survives_a_checkpoint_and_prepares_no_tet_edges():
    d = DMTet(8, [-1] * 3, [1] * 3, surface="dual")
    d.set_sdf(lambda p: p.norm(dim=-1) - 0.5)
    with torch.no_grad():
        d.deform.normal_(0, 0.3)
    assert d.deform.shape == (8 ** 3, 3)  # one offset per cell
    again = DMTet.from_state(d.state())
    assert again.surface == "dual" and all(torch.equal(a, b) for a, b in zip(again(), d()))
    assert DMTet.from_state(DMTet(8, [-1] * 3, [1] * 3).state()).surface == "tets"
    d.whole_grid = True  # as on a GPU: marching tets would build the grid's edges here, dual contouring needs none
    DMTetSurface(d).prepare(edges=False)
    assert not hasattr(d, "_edges")


def test_winding_number_and_mesh_sdf():
    box = trimesh.creation.box([1.0, 1.0, 1.0])
    v, f = torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces)
    pts = torch.tensor([[0.0, 0, 0], [0.3, 0.2, -0.1], [0.9, 0, 0], [0, 2.0, 0]])
    w = winding_number(pts, v, f)
    assert torch.allclose(w, torch.tensor([1.0, 1.0, 0.0, 0.0]), atol=1e-4)
    sdf = mesh_sdf(pts, v, f)
    assert torch.allclose(sdf, torch.tensor([-0.5, -0.2, 0.4, 1.5]), atol=0.02)


def test_dmtet_from_mesh_reproduces_the_mesh():
    from backend.eval.metrics import chamfer

    torus = trimesh.creation.torus(0.5, 0.2)
    v, f = torch.tensor(torus.vertices, dtype=torch.float32), torch.tensor(torus.faces)
    d = DMTet(24, [-1] * 3, [1] * 3)
    d.set_sdf(lambda p: mesh_sdf(p, v, f))
    mv, mf = d()
    assert chamfer(mv, mf, v, f) / float((v.max(0).values - v.min(0).values).norm()) < 0.01
    state = d.state()
    again = DMTet.from_state(state)
    assert torch.equal(again()[1], mf)


def test_dmtet_sdf_levels_add_upsampled_lattices_and_survive_a_checkpoint():
    sphere = lambda p: p.norm(dim=-1) - 0.5  # noqa: E731
    d = DMTet(16, [-1] * 3, [1] * 3, levels=(4, 8), level_scale=0.5, fine_scale=0.2)
    d.set_sdf(sphere)  # the levels start at zero, so the fine values alone reproduce the SDF
    inner = ~d.border  # the border is held outside (OUTSIDE), whatever the parameters say
    assert torch.allclose(d.values()[inner], sphere(d.grid_verts)[inner], atol=1e-6)
    assert (d.values()[d.border] == OUTSIDE).all()
    with torch.no_grad():
        d.levels[0].fill_(-0.2)  # a constant level shifts the SDF by level_scale x value everywhere
        d.levels[1][0, 0, 0] = 1.0  # one corner node: trilinear, so it fades out over a coarse cell
    shift = d.values() - sphere(d.grid_verts)
    corner = d.grid_verts.sub(-1).norm(dim=-1)
    assert torch.allclose(shift[inner & (corner > 0.26)], torch.tensor(-0.1), atol=1e-6)
    # grid vertex (1,1,1), half a coarse cell from the corner node on each axis: weight 1/8
    assert torch.isclose(shift[(17 + 1) * 17 + 1], torch.tensor(-0.1 + 0.5 / 8))
    r = d()[0].norm(dim=-1)
    assert (r - 0.6).abs().max() < 0.03  # the sphere grew by 0.1
    # A step on the coarsest lattice moves the whole surface: every surface vertex gets gradient.
    d.levels[0].grad = None
    d()[0].norm(dim=-1).sum().backward()
    assert d.levels[0].grad.abs().sum() > 0 and d.sdf.grad is not None
    again = DMTet.from_state(d.state())
    assert [lat.shape[0] for lat in again.levels] == [5, 9] and again.fine_scale == 0.2
    assert torch.equal(again.values(), d.values())


def test_dmtet_from_density_fits_the_occupied_box():
    density = lambda p: 20.0 * (p.norm(dim=-1) < 0.4).float()  # noqa: E731
    d = dmtet_from_density(density, 16, 10.0)
    assert max(abs(x) for x in d.lo.tolist() + d.hi.tolist()) < 0.6
    mv, mf = d()
    r = mv.norm(dim=-1)
    assert mf.shape[0] > 0 and (r - 0.4).abs().max() < 0.1


def test_hash_grid_deterministic_and_seeded():
    x = torch.rand(1000, 3) * 2 - 1
    torch.manual_seed(3)
    a = HashGrid(levels=6, log2_table=12, max_res=128)
    torch.manual_seed(3)
    b = HashGrid(levels=6, log2_table=12, max_res=128)
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), a(x))
    assert a(x).shape == (1000, 12)
    # hashed levels and dense levels both: trilinear in the table entries, so the gradient
    # equals central differences (checked in float64)
    small = HashGrid(levels=3, log2_table=8, max_res=32).double()
    assert torch.autograd.gradcheck(lambda e: torch.func.functional_call(small, {"embeddings": e}, (x[:20].double(),)),
                                    (small.embeddings.detach().clone().requires_grad_(True),), eps=1e-6, atol=1e-5)


def test_hash_grid_is_continuous():
    g = HashGrid(levels=4, log2_table=10, max_res=64)
    torch.nn.init.normal_(g.embeddings, std=1.0)
    x = torch.rand(200, 3) * 1.8 - 0.9
    assert (g(x + 1e-5) - g(x)).abs().max() < 1e-2


def test_regularizers_zero_on_ideal_input_and_positive_otherwise():
    verts, tets = tet_grid(8)
    sphere_v, sphere_f = marching_tets(verts, tets, verts.norm(dim=-1) - 0.6)
    flat = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    flat_f = torch.tensor([[0, 1, 2], [1, 3, 2]])
    assert normal_consistency(flat, flat_f) < 1e-6
    assert normal_consistency(sphere_v, sphere_f) > 0
    bumpy = sphere_v + torch.randn_like(sphere_v) * 0.05
    assert laplacian_smoothness(bumpy, sphere_f) > laplacian_smoothness(sphere_v, sphere_f)
    edges = torch.tensor([[0, 1]])
    assert sdf_sign_entropy(torch.tensor([5.0, -5.0]), edges) > sdf_sign_entropy(torch.tensor([0.1, -0.1]), edges)
    assert sdf_sign_entropy(torch.tensor([5.0, 1.0]), edges) == 0
    w = torch.tensor([[0.0, 0.9, 0.05]])
    assert z_variance(w, torch.tensor([[1.0, 2.0, 3.0]])) > 0
    assert z_variance(torch.tensor([[0.0, 0.95, 0.0]]), torch.tensor([[1.0, 2.0, 3.0]])) < 1e-6
    dirs = torch.tensor([[0.0, 0.0, -1.0]])
    away = torch.tensor([[[0.0, 0.0, 1.0]]]).expand(1, 3, 3)
    assert orientation(w, -away, dirs) > 0 and orientation(w, away, dirs) == 0


def test_nerf_texture_field_copies_albedo():
    field = NeRFField.from_config(FieldConfig(levels=4, log2_table=10, max_res=64, hidden=16))
    x = torch.rand(50, 3) - 0.5
    assert torch.allclose(field.texture_field()(x), field(x)[1])


def test_dmtet_from_density_fills_a_hollow_shell():
    # an opaque shell with an empty inside: one outer surface, no hidden inner one
    density = lambda p: 20.0 * ((p.norm(dim=-1) < 0.5) & (p.norm(dim=-1) > 0.35)).float()  # noqa: E731
    d = dmtet_from_density(density, 24, 10.0)
    mv, mf = d()
    assert mf.shape[0] > 0 and (mv.norm(dim=-1) > 0.42).all()
    tm = trimesh.Trimesh(mv.detach().numpy(), mf.numpy())
    tm.merge_vertices()
    assert len(tm.split(only_watertight=False)) == 1


@pytest.mark.parametrize("res", [48, 96])
def test_dmtet_from_density_closes_a_pin_hole_of_the_fields_size_at_any_grid(res):
    # A hollow ball whose shell has a channel 1/32 of the box wide (a phase I pin-hole): the
    # hand-over must fill the inside at 48 and at 96 alike (one cell of closing at 96 did not),
    # leaving one surface, the outer one.
    def density(p: torch.Tensor) -> torch.Tensor:
        r = p.norm(dim=-1)
        pin = (p[:, 1].abs() < 1 / 32) & (p[:, 2].abs() < 1 / 32) & (p[:, 0] > 0)
        return 20.0 * ((r < 0.8) & (r > 0.6) & ~pin).float()
    mv, mf = dmtet_from_density(density, res, 10.0)()
    assert mf.shape[0] > 0 and (mv.norm(dim=-1) > 0.7).all()


def test_fill_enclosed_closes_pin_holes_but_not_openings():
    from backend.geometry.dmtet import fill_enclosed

    v, _ = tet_grid(24)
    r = v.norm(dim=-1)
    shell = torch.where((r < 0.5) & (r > 0.35), -torch.ones_like(r), torch.ones_like(r))
    pin = (v[:, 1].abs() < 0.05) & (v[:, 2].abs() < 0.05) & (v[:, 0] > 0)  # one-voxel channel out
    filled = fill_enclosed(torch.where(pin, torch.ones_like(shell), shell), 24)
    assert (filled[r < 0.3] < 0).all()
    cup = torch.where(v[:, 1] > 0.1, torch.ones_like(shell), shell)  # shell with its top cut away
    assert (fill_enclosed(cup, 24)[(r < 0.3) & (v[:, 1] < 0.0)] > 0).all()  # an open cup stays open


def test_threshold_chosen_from_the_field_when_none_crosses():
    from backend.geometry.dmtet import choose_threshold, dmtet_from_density

    faint = lambda x: 5.0 * torch.exp(-(x ** 2).sum(-1) / 0.1)  # noqa: E731 (peak 5, below the threshold 10)
    threshold, why = choose_threshold(faint, 10.0, res=32)
    ax = torch.linspace(-1, 1, 32)
    grid = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    assert threshold == pytest.approx(float(faint(grid).mean()), rel=1e-6)  # the field's mean density
    assert why.startswith("no density crosses phase2.density_threshold 10 (0% of the box above it)")
    verts, faces = dmtet_from_density(faint, 16, threshold)()
    assert faces.shape[0] > 0
    assert choose_threshold(faint, 1.0, res=32) == (1.0, None)  # crosses: kept
    assert choose_threshold(lambda x: torch.ones(x.shape[0]), 10.0, res=8) == (10.0, None)  # constant: nothing helps


def test_regularizers_equal_their_definitions_computed_pair_by_pair():
    """The masked forms (no data-dependent sizes: no host sync on CUDA) against the
    definitions written out with Python loops over edges, vertices and tet edges."""
    import itertools
    import math

    verts, tets = tet_grid(6)
    v, f = marching_tets(verts, tets, verts.norm(dim=-1) - 0.55)
    v = v + torch.randn(v.shape, generator=torch.Generator().manual_seed(3)) * 0.02
    n = torch.nn.functional.normalize(torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=-1), dim=-1)
    by_edge: dict[tuple[int, int], list[int]] = {}
    for i, face in enumerate(f.tolist()):
        for a, b in ((face[0], face[1]), (face[1], face[2]), (face[2], face[0])):
            by_edge.setdefault((min(a, b), max(a, b)), []).append(i)
    pairs = [(x, y) for faces in by_edge.values() for x, y in itertools.combinations(faces, 2)]
    want = sum(1 - float(n[x] @ n[y]) for x, y in pairs) / len(pairs)
    assert math.isclose(float(normal_consistency(v, f)), want, rel_tol=1e-5)
    neighbours: dict[int, list[int]] = {}
    for face in f.tolist():
        for a, b in ((face[0], face[1]), (face[1], face[2]), (face[2], face[0])):
            neighbours.setdefault(a, []).append(b)
            neighbours.setdefault(b, []).append(a)
    want = sum(float(((v[i] - v[nb].mean(0)) ** 2).sum()) for i, nb in neighbours.items()) / len(neighbours)
    assert math.isclose(float(laplacian_smoothness(v, f)), want, rel_tol=1e-5)
    sdf = torch.randn(8, generator=torch.Generator().manual_seed(4))
    edges = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6], [6, 7], [7, 0]])
    terms = []
    for a, b in edges.tolist():
        sa, sb = float(sdf[a]), float(sdf[b])
        if (sa > 0) != (sb > 0):
            bce = lambda x, t: -(t * math.log(1 / (1 + math.exp(-x))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-x))))  # noqa: E731
            terms.append(bce(sa, float(sb > 0)) + bce(sb, float(sa > 0)))
    assert terms and math.isclose(float(sdf_sign_entropy(sdf, edges)), sum(terms) / len(terms), rel_tol=1e-5)


def test_dmtet_border_is_held_outside():
    # An SDF inside everywhere (-5), the border's parameters pushed inside too: the surface
    # stays closed, inside the grid's box on every edge from the border, at t = 1 / (1 + 5)
    # of the edge (OUTSIDE = 1): at max-norm 1 - cell / 6 (cell 0.25).
    d = DMTet(8, [-1.0] * 3, [1.0] * 3)
    d.set_sdf(lambda p: -torch.ones(p.shape[0]))
    with torch.no_grad():
        d.sdf.fill_(-5.0)
    values = d.values()
    assert (values[d.border] == OUTSIDE).all() and (values[~d.border] == -5.0).all()
    assert int(d.border.sum()) == 9 ** 3 - 7 ** 3
    verts, faces = d()
    tm = trimesh.Trimesh(verts.detach().numpy(), faces.numpy())
    tm.merge_vertices()
    assert tm.is_watertight and tm.volume > 0
    linf = verts.detach().abs().max(-1).values
    assert float(linf.min()) == pytest.approx(1 - 0.25 / 6, abs=1e-6)
    assert float(linf.max()) == pytest.approx(1 - 0.25 / 6, abs=1e-6)


def test_nerf_density_is_zero_outside_its_region_and_unchanged_inside():
    cfg = FieldConfig(levels=4, log2_table=10, max_res=64, hidden=16)
    torch.manual_seed(0)
    free = NeRFField.from_config(cfg)
    torch.manual_seed(0)
    held = NeRFField.from_config(cfg, region=0.6)
    x = torch.rand(4000, 3) * 2 - 1
    inside = x.norm(dim=-1) <= 0.6
    for a, b in ((free.density(x), held.density(x)), (free(x)[0], held(x)[0]),
                 (free.with_gradient(x)[0], held.with_gradient(x)[0])):
        assert torch.equal(a[inside], b[inside]) and (b[~inside] == 0).all() and (a[~inside] > 0).all()
    grad = held.with_gradient(x)[2]
    assert torch.equal(grad[inside], free.with_gradient(x)[2][inside]) and (grad[~inside] == 0).all()
