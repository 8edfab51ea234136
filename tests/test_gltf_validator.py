"""Exported GLBs against the Khronos glTF validator: no errors, no warnings."""
import json

import pytest
import torch
import trimesh

from backend.export.mesh_export import ExportConfig, build_textured_mesh, write_glb
from backend.server.jobs import run_job

from .helpers import NO_REMOVAL, TINY, assert_clean_gltf, gltf_report, oracle_job

def _require_validator(path) -> dict:
    report = gltf_report(path)
    if report is None:
        pytest.skip("the glTF validator is not installed (make test installs it with npm into tools/gltf)")
    return report


def test_textured_mesh_with_creases_and_a_normal_map_is_valid(tmp_path, raster):
    box = trimesh.creation.box([1.0, 0.6, 0.8]).subdivide()
    mesh = build_textured_mesh(raster, torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces),
                               lambda x: (x * 0.5 + 0.5).clamp(0, 1),
                               ExportConfig(max_faces=5000, pieces=NO_REMOVAL, texture_size=64, uv_padding=2,
                                            normal_map=True, crease_angle=60.0, preview_resolution=64, metallic=0.0,
                                            roughness=0.9))
    assert mesh.normal_map is not None
    write_glb(mesh, tmp_path / "box.glb", 60.0, 0.0, 0.9)
    report = _require_validator(tmp_path / "box.glb")
    assert report["numErrors"] == 0 and report["numWarnings"] == 0, report["messages"]


def test_a_job_result_is_valid(tmp_path):
    job = oracle_job(tmp_path, overrides=TINY)
    result = run_job(job, tmp_path, tmp_path / "out")
    assert result is not None, (tmp_path / "out" / "events.jsonl").read_text()[-1500:]
    _require_validator(result["glb"])
    assert_clean_gltf(result["glb"])
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["final"]["iou"] > 0
