"""Which pieces of a surface belong to the object (geometry/pieces.py) and the exported
file measured on its own (eval/oracle_report.file_report): small synthetic meshes with
known answers."""
import math

import pytest
import torch
import trimesh

from backend.eval.metrics import chamfer
from backend.eval.oracle_report import file_report, own_box
from backend.export.mesh_export import write_glb
from backend.geometry.mesh import Mesh
from backend.geometry.cleanup import cleanup
from backend.geometry.pieces import PieceConfig, count_parts, decimated_object, find_pieces, keep_object


def _sphere(sub: int, radius: float, at=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    s = trimesh.creation.icosphere(sub, radius)
    s.apply_translation(at)
    return s


def _scene() -> dict[str, trimesh.Trimesh]:
    """A body with an enclosed inner shell, a cavity (an inward-facing shell), a second part
    of 11% of the body's area, a far speck, a thin strip as long as the body is wide (the
    old rule, by diameter, kept it) and a tetrahedron of 8% of the area but 4 faces."""
    cavity = _sphere(2, 0.2, (0.3, 0.0, 0.0))
    cavity.invert()
    tetra = trimesh.Trimesh([[0, 0, 0], [0.4, 0, 0], [0, 0.4, 0], [0, 0, 0.4]], [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    tetra.apply_translation([-2.0, 0.0, 0.0])
    return {"body": _sphere(3, 0.6), "inner": _sphere(2, 0.25, (-0.25, 0.0, 0.0)), "cavity": cavity,
            "part": _sphere(2, 0.2, (1.2, 0.0, 0.0)), "speck": _sphere(1, 0.03, (0.0, 1.5, 0.0)),
            "strip": trimesh.creation.box([1.2, 0.004, 0.004], transform=trimesh.transformations.translation_matrix(
                [0.0, -1.0, 0.0])), "tetra": tetra}


def _tensors(meshes: list[trimesh.Trimesh]) -> tuple[torch.Tensor, torch.Tensor]:
    m = trimesh.util.concatenate(meshes)
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces)


def _survivors(scene: dict[str, trimesh.Trimesh], faces: torch.Tensor) -> set[str]:
    """The scene's pieces whose faces are all in `faces` (concatenated in the scene's order)."""
    out, offset, kept = set(), 0, {tuple(f) for f in faces.tolist()}
    for name, m in scene.items():
        own = {tuple(f) for f in (m.faces + offset).tolist()}
        assert own <= kept or not own & kept, f"{name} was cut, not kept or removed whole"
        if own <= kept:
            out.add(name)
        offset += len(m.vertices)
    return out


def test_pieces_are_welded_components_ordered_by_area():
    scene = _scene()
    split = scene["body"].copy()
    split.unmerge_vertices()  # three vertices a face, as UV seams leave them: still one piece
    v, f = _tensors([split, scene["part"], scene["speck"]])
    pieces = find_pieces(v.numpy(), f.numpy())
    assert len(pieces) == 3
    assert pieces.faces.tolist() == [1280, 320, 80]
    assert pieces.area[0] == pytest.approx(scene["body"].area, rel=1e-5)
    assert pieces.share().sum() == pytest.approx(1.0)
    assert count_parts(v, f) == 3


def test_loose_pieces_go_by_area_face_count_and_enclosure_and_the_object_stays():
    """Known answer: the body and the part (11% of the body's area) stay; the speck (0.23%)
    and the strip (0.4%) go by area, the tetrahedron (8%, 4 faces) by face count, the inner
    shell (17%) and the cavity by enclosure."""
    scene = _scene()
    v, f = _tensors(list(scene.values()))
    shares = {k: m.area / scene["body"].area for k, m in scene.items()}
    assert shares["speck"] < 0.01 and shares["strip"] < 0.01 and shares["tetra"] > 0.05 and shares["inner"] > 0.1
    assert len(scene["strip"].faces) < 0.01 * len(scene["body"].faces) < len(scene["speck"].faces)
    _, kept, removal = keep_object(v, f, PieceConfig(min_area=0.01, min_faces=0.01))
    assert _survivors(scene, kept) == {"body", "part"}
    assert removal.small == pytest.approx(sorted((shares[k] for k in ("tetra", "strip", "speck")), reverse=True),
                                          rel=1e-4)
    assert removal.enclosed == pytest.approx([shares["inner"], shares["cavity"]], rel=1e-4)
    total = sum(m.area for m in scene.values())
    gone = sum(scene[k].area for k in ("inner", "cavity", "speck", "strip", "tetra"))
    assert removal.share == pytest.approx(gone / total, rel=1e-4)
    # without the face-count rule the tetrahedron is a part (8% of the area); with no rule
    # at all only the enclosed shells go
    _, kept, _ = keep_object(v, f, PieceConfig(min_area=0.01, min_faces=0.0))
    assert _survivors(scene, kept) == {"body", "part", "tetra"}
    _, kept, _ = keep_object(v, f, PieceConfig(min_area=0.0, min_faces=0.0))
    assert _survivors(scene, kept) == set(scene) - {"inner", "cavity"}


def test_a_sources_parts_stay_whatever_they_are():
    # A user's mesh of four parts (a bottle, the ship inside it, a stand, a small label):
    # its four largest pieces stay, enclosed or small; what the edit added around them goes.
    scene = _scene()
    label = _sphere(1, 0.05, (0.0, 0.0, 0.9))
    source = [scene["body"], scene["inner"], scene["part"], label]
    v, f = _tensors([*source, scene["speck"]])
    assert count_parts(*_tensors(source)) == 4
    _, kept, removal = keep_object(v, f, PieceConfig(min_area=0.01, min_faces=0.01), keep=4)
    assert kept.shape[0] == sum(len(m.faces) for m in source) and (len(removal.small), removal.enclosed) == (1, [])


def test_what_decimation_cuts_off_goes_like_any_loose_piece():
    """A ball of 0.5 with a bead of 0.04 on a rod 8 mm thick (one piece, as the export's
    first rule sees it): VTK's quadric collapse to 500 faces cuts the rod, and the bead would
    ship as a floater under 1% of the area (seen on the oracle blocks at tet_res 128: 20 000
    faces from 474 000, one piece of 0.06% after decimation)."""
    body = trimesh.creation.icosphere(5, 0.5)
    bead = _sphere(3, 0.04, (0.75, 0.0, 0.0))
    rod = trimesh.creation.cylinder(0.004, 0.3, sections=8)
    rod.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, [0, 1, 0]))
    rod.apply_translation([0.6, 0.0, 0.0])
    joined = body.union(rod, engine="manifold").union(bead, engine="manifold")
    v, f = torch.tensor(joined.vertices, dtype=torch.float32), torch.tensor(joined.faces)
    rule = PieceConfig(min_area=0.01, min_faces=0.01)
    assert len(find_pieces(v.numpy(), keep_object(v, f, rule)[1].numpy())) == 1  # one piece before decimation
    cut_v, cut_f, _ = cleanup(v, f, 500)
    cut = find_pieces(cut_v.double().numpy(), cut_f.numpy())
    assert len(cut) == 2 and cut.share()[1] < 0.01  # the precondition: decimation alone leaves the bead loose

    kept_v, kept_f, crumbs = decimated_object(v, f, rule, 500)
    left = find_pieces(kept_v.double().numpy(), kept_f.numpy())
    assert len(left) == 1 and len(crumbs.small) == 1
    assert crumbs.share == pytest.approx(float(cut.share()[1]), rel=1e-9)  # exactly the bead's share went
    assert set(map(tuple, kept_f.tolist())) == set(map(tuple, cut_f[torch.from_numpy(cut.label == 0)].tolist()))


def test_file_report_measures_the_file_as_a_viewer_frames_it(tmp_path):
    """Known answers: a unit cube target; the result, the cube plus a speck whose far side is
    0.31 outside the cube's box: two pieces, the speck's share of the area, 0.31 / sqrt(3)
    outside; and framed by their own boxes the target and itself twice its size elsewhere
    are the same mesh (their Chamfer is the samples' floor)."""
    cube = trimesh.creation.box([1.0, 1.0, 1.0]).subdivide().subdivide()
    target = Mesh(torch.tensor(cube.vertices, dtype=torch.float32), torch.tensor(cube.faces))
    speck = trimesh.creation.box([0.02, 0.02, 0.02], transform=trimesh.transformations.translation_matrix([0.8, 0, 0]))
    v, f = _tensors([cube, speck])
    write_glb(Mesh(v, f), tmp_path / "r.glb", 60.0, 0.0, 0.9)
    r = file_report(tmp_path / "r.glb", target)
    assert (r["pieces"], r["small_pieces"]) == (2, 1)
    assert r["small_share"] == pytest.approx(r["smallest_share"]) == pytest.approx(speck.area / (6 + speck.area), rel=1e-4)
    assert r["outside_box"] == pytest.approx(0.31 / math.sqrt(3), rel=1e-4)
    framed = chamfer(v, f, target.verts, target.faces) / target.bbox_diagonal()  # the job frame's figure
    assert r["chamfer_own_box"] > 2 * framed  # the speck stretches the box a viewer frames

    write_glb(Mesh(target.verts * 2 + torch.tensor([3.0, -1.0, 0.5]), target.faces), tmp_path / "moved.glb", 60.0, 0.0, 0.9)
    r = file_report(tmp_path / "moved.glb", target)
    floor = chamfer(own_box(target.verts), target.faces, own_box(target.verts), target.faces)
    assert (r["pieces"], r["small_pieces"], r["smallest_share"]) == (1, 0, 1.0)
    assert r["chamfer_own_box"] == pytest.approx(floor, rel=1e-3)
    assert r["outside_box"] > 1.0
