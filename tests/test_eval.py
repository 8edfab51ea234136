from dataclasses import replace

import pytest
import torch
import trimesh

from backend.eval.metrics import chamfer, iou, psnr
from backend.eval.oracle_report import oracle_report
from backend.geometry.mesh import Mesh, normalized


def _box() -> Mesh:
    box = trimesh.creation.box([1.0, 0.6, 0.8]).subdivide().subdivide()
    v = torch.tensor(box.vertices, dtype=torch.float32)
    return normalized(Mesh(v, torch.tensor(box.faces), colors=(v > 0).float()))[0]


def test_metrics_basics():
    a = torch.zeros(1, 4, 4, 1)
    a[:, :2] = 1
    b = torch.zeros(1, 4, 4, 1)
    b[:, :, :2] = 1
    assert iou(a, a) == 1.0 and abs(iou(a, b) - 4 / 12) < 1e-6
    img = torch.full((1, 4, 4, 3), 0.5)
    assert psnr(img, img + 0.1) == psnr(img, img + 0.1, torch.ones(1, 4, 4, 1))
    assert abs(psnr(img, img + 0.1) - 20.0) < 1e-3
    assert psnr(img, img) == 100.0  # capped: metrics.json stays standard JSON


def test_oracle_report_perfect_and_degraded(raster):
    target = _box()
    perfect = oracle_report(raster, target, target)
    assert perfect["chamfer_rel"] < 0.01 and perfect["iou"] == 1.0 and perfect["texture_psnr"] > 40
    recoloured = replace(target, colors=1 - target.colors)
    assert oracle_report(raster, target, recoloured)["texture_psnr"] < 10
    shrunk = replace(target, verts=target.verts * 0.9)
    report = oracle_report(raster, target, shrunk)
    assert report["iou"] < 0.95 and report["chamfer_rel"] > 0.01
    assert chamfer(target.verts, target.faces, shrunk.verts, shrunk.faces) > 0


@pytest.mark.parametrize("name,inside,sections", [("mug", (0.82, 0.0, 0.0), 12), ("chair", (0.22, -0.3, 0.22), None),
                                                   ("ring_stick", (0.0, -0.2, 0.0), 24)])
def test_thin_targets_are_one_closed_surface_with_4mm_parts_on_a_10cm_object(name, inside, sections):
    """Known answer: at the centre of the handle's tube (12 sections round), a chair leg (a
    box) and the stick (24 sections), the signed distance is minus half the thin parts'
    thickness (THIN = 4% of the size), times cos(pi / sections) for a polygonal tube."""
    import math

    from backend.eval.targets import THIN, make_target
    from backend.geometry.mesh_sdf import mesh_sdf

    mesh = make_target(name)
    welded = mesh.copy()
    welded.merge_vertices()
    assert welded.is_watertight and welded.is_volume
    assert mesh.extents.max() == pytest.approx(1.0, abs=0.3)  # about 10 cm: the unit is 10 cm
    d = mesh_sdf(torch.tensor([inside], dtype=torch.float32), torch.tensor(mesh.vertices, dtype=torch.float32),
                 torch.tensor(mesh.faces, dtype=torch.long))
    inscribed = math.cos(math.pi / sections) if sections else 1.0
    assert float(d[0]) == pytest.approx(-THIN / 2 * inscribed, rel=1e-3)


def test_suite_adds_its_overrides_to_every_cases_job(tmp_path):
    import json

    from backend.eval.suite import _job_path
    from backend.eval.targets import MODE_OVERRIDES

    change = {"phase2.sdf_grid.surface": "dual", "phase2.iterations": 400}
    target = json.loads(_job_path("ring", tmp_path / "ring", "draft", 1, change).read_text())
    assert target["seed"] == 1 and target["overrides"] == {"progress.preview_every": 1_000_000, **change}
    edit = json.loads(_job_path("edit", tmp_path / "edit", "draft", 0, change).read_text())
    assert edit["overrides"] == {**MODE_OVERRIDES["edit"], "progress.preview_every": 1_000_000, **change}
    assert json.loads(_job_path("ring", tmp_path / "plain", "draft", 0).read_text())["overrides"] == {
        "progress.preview_every": 1_000_000}
