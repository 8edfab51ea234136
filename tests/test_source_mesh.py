"""Broken or awkward input meshes for stylize / edit: a clear error or a reported fix."""
import numpy as np
import pytest
import torch
import trimesh

from backend.errors import MeshError
from backend.geometry.source_mesh import colored_samples, prepare_source, uvs_valid
from backend.server.jobs import run_job


def test_empty_point_cloud_and_not_a_mesh_are_refused(tmp_path):
    trimesh.PointCloud(np.random.rand(100, 3)).export(tmp_path / "cloud.ply")
    (tmp_path / "garbage.glb").write_bytes(b"this is not a mesh")
    (tmp_path / "empty.obj").write_text("# nothing\n")
    for name, says in (("cloud.ply", "point cloud"), ("garbage.glb", "could not read"), ("empty.obj", "no triangles|could not read")):
        with pytest.raises(MeshError, match=says):
            prepare_source(tmp_path / name, 200_000)


def test_broken_mesh_fails_the_job_with_an_actionable_error(tmp_path):
    (tmp_path / "garbage.glb").write_bytes(b"glTF but not really")
    events: list[dict] = []
    job = {"version": 1, "mode": "edit", "prompt": {"text": "taller"}, "mesh": "garbage.glb"}
    assert run_job(job, tmp_path, tmp_path / "out", events.append) is None
    err = events[-1]
    assert err["code"] == "invalid_input" and "garbage.glb" in err["message"] and err["hint"]
    assert (tmp_path / "out" / "inputs").is_dir()  # the input was kept with the job


def test_far_from_origin_is_recentred_and_the_transform_kept(tmp_path):
    box = trimesh.creation.box((2.0, 1.0, 1.0))
    box.apply_translation([5000.0, -300.0, 12.0])
    box.export(tmp_path / "far.glb")
    src = prepare_source(tmp_path / "far.glb", 200_000)
    assert any("recentred" in f for f in src.fixes)
    assert src.mesh.verts.abs().max() <= 0.8 + 1e-5
    back = src.norm.undo(src.mesh.verts)
    assert torch.allclose(back.mean(0), torch.tensor([5000.0, -300.0, 12.0]), atol=1e-2)


@pytest.mark.slow
def test_two_million_faces_are_decimated_with_their_colours(tmp_path):
    grid = trimesh.creation.icosphere(subdivisions=8, radius=1.0)  # 1.3 M faces
    big = trimesh.util.concatenate([grid, grid.copy().apply_translation([2.5, 0, 0])])  # 2.6 M
    big.visual.vertex_colors = np.tile([200, 40, 40, 255], (len(big.vertices), 1)).astype(np.uint8)
    big.export(tmp_path / "big.ply")
    src = prepare_source(tmp_path / "big.ply", 200_000)
    assert src.mesh.faces.shape[0] <= 200_000 and any("decimated from 2621440" in f for f in src.fixes)
    assert src.mesh.colors is not None and torch.allclose(src.mesh.colors.mean(0), torch.tensor([200, 40, 40]) / 255,
                                                          atol=0.02)


def test_uv_validity_and_colour_samples():
    from backend.export.mesh_export import unwrap
    from backend.geometry.mesh import Mesh

    sphere = trimesh.creation.icosphere(2, 0.5)
    v, f, uv = unwrap(torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces), 256, 2)
    assert uvs_valid(Mesh(v, f, uv=uv))
    assert not uvs_valid(Mesh(v, f, uv=uv * 3))  # tiling
    assert not uvs_valid(Mesh(v, f, uv=torch.zeros_like(uv)))  # collapsed
    assert not uvs_valid(Mesh(v, f))
    colored = Mesh(v, f, colors=torch.tensor([0.2, 0.5, 0.9]).expand(len(v), 3))
    points, colors = colored_samples(colored, 1000)
    assert points.shape == (1000, 3) and torch.allclose(colors, torch.tensor([0.2, 0.5, 0.9]).expand(1000, 3))
    assert colored_samples(Mesh(v, f), 10) is None


def test_edit_cancelled_in_the_geometry_phase_resumes_from_its_checkpoint(tmp_path):
    from tests.helpers import TINY

    box = trimesh.creation.box((1.0, 0.6, 0.6))
    box.export(tmp_path / "input.glb")
    box.export(tmp_path / "target.glb")
    job = {"version": 1, "mode": "edit", "prompt": {"text": "taller"}, "mesh": "input.glb", "guidance": "oracle",
           "oracle": {"target_mesh": "target.glb"}, "overrides": TINY}
    out, events = tmp_path / "out", []
    calls = iter(range(1000))
    assert run_job(job, tmp_path, out, events.append, lambda: next(calls) >= 6) is None
    assert events[-1]["type"] == "cancelled"
    saved = torch.load(out / "checkpoints" / "current.pt", weights_only=False)
    assert saved["phase"] == "phase2" and len(saved["state"]["modules"]["dmtet"]["level_res"]) == 3  # edit's levels
    events.clear()
    result = run_job(job, tmp_path, out, events.append)
    assert result is not None and (out / "result.glb").exists()
    assert any("phase2: resuming at step" in e.get("message", "") for e in events)
