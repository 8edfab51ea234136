"""The extension in headless Blender (PyPI bpy): built by Blender's own extension builder,
installed from the zip, registered; the operators drive a real backend subprocess."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from .farm_cluster import needs_ray
from .helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("bpy") is None,
                                                   reason="bpy (PyPI) not installed: make test installs it")]

# A paper-guidance job on the tiny models that finishes in seconds (quality is meaningless).
FAST = {"phase1.iterations": 3, "phase2.iterations": 3, "phase3.iterations": 3, "phase1.resolution": 32,
        "phase1.samples": 16, "phase1.batch": 1, "phase2.resolution": 32, "phase2.batch": 1, "phase3.resolution": 32,
        "phase3.batch": 1, "phase2.tet_res": 16, "phase2.density_threshold": 5.0, "export.texture_size": 64,
        "export.preview_resolution": 64, "progress.preview_every": 1}


@pytest.fixture(scope="module")
def extension(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ext")
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_extension.py"), str(out)], check=True, cwd=ROOT)
    return next(out.glob("conjure-*.zip"))


NEWEST = ROOT / ".venv-bpy" / "bin" / "python"  # the newest bpy (make test builds it where Python 3.13 is)


def drive(extension: Path, scenario: str, work: Path, args: dict | None = None, timeout: float = 900,
          env: dict | None = None, blender: Path | None = None) -> dict:
    """One scenario in a fresh headless Blender: this venv's bpy 4.5, or `blender`, another
    interpreter's bpy, with the backend still run by this venv's Python. Every deprecation
    warning is shown; none may come from the add-on."""
    env = {**(env or os.environ), "BLENDER_USER_RESOURCES": str(work / "blender_user"), "HF_HUB_OFFLINE": "1",
           "CONJURE_BACKEND_PYTHON": sys.executable}
    proc = subprocess.run([str(blender or sys.executable), "-W", "always::DeprecationWarning",
                           str(ROOT / "tools" / "blender_driver.py"), str(extension), scenario,
                           str(work), json.dumps(args or {})], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = [line for line in proc.stderr.splitlines() if "Warning" in line and "conjure" in line]
    assert ours == [], ours
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def newest_blender() -> Path:
    if not NEWEST.is_file():
        pytest.skip("no .venv-bpy: the newest bpy needs Python 3.13 (make test builds it where python3.13 is)")
    return NEWEST


@pytest.fixture(scope="module")
def registered(extension, tmp_path_factory) -> dict:
    return drive(extension, "register", tmp_path_factory.mktemp("register"))


def test_installs_from_the_built_zip_and_registers_cleanly(registered):
    r = registered
    assert all(r["ops"].values()), r["ops"]
    assert r["panel"] and r["scene_props"]
    assert r["after_disable"] == {"scene_props": False, "panel": False, "ops": []}
    assert r["re_enabled"]


def test_the_sidebar_is_collapsible_sub_panels_that_draw_every_input(registered):
    main = "CONJURE_PT_main"
    assert registered["panels"] == {
        main: {"parent": "", "options": []},
        "CONJURE_PT_inputs": {"parent": main, "options": []},
        "CONJURE_PT_weights": {"parent": "CONJURE_PT_inputs", "options": ["DEFAULT_CLOSED"]},
        "CONJURE_PT_style": {"parent": main, "options": []},
        "CONJURE_PT_output": {"parent": main, "options": []},
        "CONJURE_PT_progress": {"parent": main, "options": []},
    }
    # drawn in each mode and job state: no property, operator or list that does not exist,
    # and every job input the scene holds has its place in some panel
    assert registered["draw"]["missing"] == []
    drawn = {name for cls, name in registered["draw"]["drawn"] if cls == "ConjureSettings"}
    assert drawn == set(registered["settings"])
    # the list's operator (operators/input_ops.py): three rows added, the active one removed
    assert registered["image_slot"] == {"results": [["FINISHED"]] * 4, "images": 2, "active": 1}


def assert_shaded_as_the_glb_says(obj: dict, glb: Path) -> None:
    """Blender's glTF importer draws a triangle flat exactly when the file gives each of its
    corners the face's own normal (io_scene_gltf2, blender/imp mesh import, set_poly_smoothing:
    flat where every corner's dot with the face normal is above 0.9999999). A triangle every
    edge of which is a crease is such a face; drawn flat it looks as the file says. Every other
    face must be smooth."""
    mesh = next(iter(trimesh.load(glb, process=False).geometry.values()))
    assert len(mesh.faces) == obj["faces"]  # one primitive of triangles: the importer keeps their order
    normals = np.asarray(mesh.vertex_normals, dtype=np.float64)[mesh.faces]  # [F,3,3], the file's corners
    dots = np.einsum("fkc,fc->fk", normals, np.asarray(mesh.face_normals, dtype=np.float64))
    own_normal = set(np.flatnonzero((dots > 1 - 1e-5).all(axis=1)).tolist())
    assert set(obj["flat"]) <= own_normal, sorted(set(obj["flat"]) - own_normal)[:10]


def test_generate_from_a_script_imports_a_textured_object_at_the_cursor(extension, tmp_path):
    r = drive(extension, "generate", tmp_path, {"op": {"prompt": "a red box", "overrides": json.dumps(FAST)}})
    assert r["op"] == ["FINISHED"], r["state"]
    obj = r["object"]
    assert obj["uv_layers"] >= 1 and obj["images"] >= 1 and obj["packed"] and obj["faces"] > 0
    assert obj["custom_normals"]  # the GLB's normals: smooth, split at creases
    assert_shaded_as_the_glb_says(obj, Path(obj["job"]) / "out" / "result.glb")
    assert obj["normal_map"]  # the baked normal map, wired by Blender's glTF importer
    # the whole material reaches the shader: colour, roughness and metallic textures, normal map
    assert {"Base Color", "Roughness", "Metallic", "Normal"} <= set(obj["bsdf_linked"])
    assert obj["collection"] == ["Conjure"] and Path(obj["job"]).is_dir()
    assert [row[3] for row in obj["matrix"][:3]] == pytest.approx([1.0, 2.0, 0.5])
    assert r["state"]["preview"] and Path(r["state"]["preview"]).is_file()


def test_panel_sizes_become_export_overrides_and_quads_join_the_triangles(extension, tmp_path):
    fast = {k: v for k, v in FAST.items() if k != "export.texture_size"}
    r = drive(extension, "generate", tmp_path, {"op": {"prompt": "a red box", "overrides": json.dumps(fast),
                                                       "max_faces": 300, "texture_size": 128, "quads": True,
                                                       "pbr": True}})
    assert r["op"] == ["FINISHED"], r["state"]
    obj = r["object"]
    sent = json.loads((Path(obj["job"]) / "job_request.json").read_text())["overrides"]
    assert sent["export.max_faces"] == 300 and sent["export.texture_size"] == 128
    assert sent["phase3.material"] == "pbr" and sent["phase3.shading.lambertian"] == 0.5
    assert obj["image_size"] == [128, 128]
    # Tris to Quads: the triangles (at most 300) joined pairwise wherever it may
    assert obj["quads"] > 0 and obj["faces"] < 300 and obj["smooth"] == 1.0


def test_cancel_stops_a_running_job_within_one_step(extension, tmp_path):
    slow = {**FAST, "phase1.iterations": 400}
    r = drive(extension, "cancel", tmp_path, {"op": {"prompt": "a red box", "overrides": json.dumps(slow)}})
    assert r["state"]["status"] == "cancelled", r["state"]
    stopped_at = int(r["state"]["hint"].rsplit(" ", 1)[-1])  # "cancelled in phase1 at step N"
    assert stopped_at - r["step_at_cancel"] <= 1


def test_killed_backend_is_an_error_and_blender_goes_on(extension, tmp_path):
    slow = {**FAST, "phase1.iterations": 400}
    r = drive(extension, "kill", tmp_path, {"op": {"prompt": "a red box", "overrides": json.dumps(slow)}})
    assert r["state"]["status"] == "error" and "exited" in r["state"]["error"] and not r["state"]["running"]
    assert "press Resume" in r["state"]["hint"]
    assert "/conjure/logs/backend.log" in r["state"]["hint"]  # kept in the extension's user folder
    assert r["blender_usable"] and r["job_folder_kept"]


@pytest.mark.parametrize("mode", ["stylize", "edit"])
def test_mesh_modes_restyle_a_copy_with_the_same_transform_and_hide_the_original(extension, tmp_path, mode):
    style = tmp_path / "style.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (30, 90, 200)).save(style)
    op = {"prompt": "a blue ball" if mode == "edit" else "", "overrides": json.dumps(FAST)}
    if mode == "stylize":
        op["style_image"] = str(style)
    r = drive(extension, mode, tmp_path, {"op": op})
    assert r["op"] == ["FINISHED"], r["state"]
    obj = r["object"]
    assert obj["uv_layers"] >= 1 and obj["images"] >= 1 and obj["collection"] == ["Conjure"]
    assert sum(obj["matrix"], []) == pytest.approx(sum(r["original_matrix"], []), abs=1e-5)
    assert r["original_hidden"] and r["original_exists"]


def test_backend_killed_then_resume_goes_on_in_the_same_folder(extension, tmp_path):
    slow = {**FAST, "phase1.iterations": 40, "progress.checkpoint_every": 2}
    r = drive(extension, "resume", tmp_path, {"op": {"prompt": "a red box", "overrides": json.dumps(slow)},
                                              "kill_after": 5})
    assert r["after_kill"]["status"] == "error" and "press Resume" in r["after_kill"]["hint"]
    assert r["resume"] == ["FINISHED"] and r["state"]["status"] == "done" and r["state"]["result"]
    assert len(r["jobs"]) == 1  # no new job folder
    resumed = [m for m in r["logs"] if m.startswith("phase1: resuming at step")]
    assert resumed and int(resumed[0].rsplit(" ", 1)[-1]) >= 4  # from its checkpoint, not from step 0


def test_a_second_generate_leaves_the_running_job_alone(extension, tmp_path):
    slow = {**FAST, "phase1.iterations": 400}
    r = drive(extension, "double", tmp_path, {"op": {"prompt": "a red box", "overrides": json.dumps(slow)}})
    assert r["second"] != ["FINISHED"] and "already running" in " ".join(r["second"])
    assert r["running_after"] and r["same_job"] and r["jobs"] == 1


def test_loading_a_new_file_resets_the_session(extension, tmp_path):
    slow = {**FAST, "phase1.iterations": 400}
    r = drive(extension, "load", tmp_path, {"op": {"prompt": "a red box", "overrides": json.dumps(slow)},
                                            "fast": {"prompt": "a blue box", "overrides": json.dumps(FAST)}})
    assert not r["job_after_load"] and not r["state_after_load"]["running"]
    assert r["next"] == ["FINISHED"] and r["state"]["status"] == "done"


def test_models_box_downloads_what_a_failed_job_needs_then_the_job_runs(extension, tmp_path):
    from backend.models.tiny import build_tiny

    from .hub_mirror import download_env, tiny_mirror

    tiny = build_tiny(tmp_path / "tiny", ["unclip", "imagebind", "dino"])
    fast = {**FAST, "phase1.batch": 1}
    with tiny_mirror(tiny) as hub:
        r = drive(extension, "models", tmp_path, {
            "models": "default", "op": {"prompt": "a red box", "preset": "draft", "overrides": json.dumps(fast)},
            "imagebind_config": str(tiny / "imagebind" / "config.json"),
            "imagebind_folder": str(tmp_path / "conjure" / "imagebind")}, env=download_env(tmp_path, hub, tiny, True))
    assert r["first_state"]["status"] == "error" and r["error_code"] == "model_missing"
    assert "imagebind: CC-BY-NC 4.0" in r["licences"]  # asked before anything moved
    assert r["after"]["status"] == "done", r["after"]
    assert r["after"]["done_gb"] == r["after"]["total_gb"] > 0
    assert all(r["present"][role] for role in ("unclip", "imagebind", "imagebind_tokenizer"))
    assert not r["present"]["sd"] and r["free_gb"] > 0 and r["cache"] == str(tmp_path / "hub")
    assert r["second"] == ["FINISHED"] and r["second_state"]["status"] == "done", r["second_state"]


@needs_ray
def test_the_add_on_runs_a_generate_on_a_ray_farm_unchanged(extension, tmp_path):
    """serve --http --ray with one worker, busy with another artist's job and one more of
    theirs waiting: Blender's high-priority job shows its place and the farm's load, then
    runs on the farm and is imported like any result."""
    import socket

    from backend.client import HttpBackend
    from backend.job import parse_job

    from .farm_cluster import RESOURCE, local_cluster
    from .helpers import TINY, oracle_job

    tokens = {"artist": "t" * 24, "other": "o" * 24}
    (tmp_path / "users.json").write_text(json.dumps(tokens))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with local_cluster(extra_nodes=1) as cluster:
        front = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--http", f"127.0.0.1:{port}", "--users",
                                  str(tmp_path / "users.json"), "--ray", cluster.address, "--worker-resource", RESOURCE,
                                  "--workers", "1", "--jobs-dir", str(tmp_path / "front")], cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        try:
            assert "serving on" in front.stdout.readline()
            other = HttpBackend(f"http://127.0.0.1:{port}", tokens["other"], poll_wait=1.0)
            local = tmp_path / "other"
            local.mkdir()
            first = other.submit(parse_job(oracle_job(local, overrides=TINY)), local, local / "o1")
            end = time.monotonic() + 120
            while not any(w["job"] == first for w in other.status()["workers"]):
                assert time.monotonic() < end
                time.sleep(0.2)
            other.submit(parse_job(oracle_job(local, overrides=TINY)), local, local / "o2")
            (tmp_path / "blender").mkdir()
            r = drive(extension, "farm", tmp_path / "blender", {
                "url": f"http://127.0.0.1:{port}", "token": tokens["artist"],
                "op": {"prompt": "a red box", "overrides": json.dumps(FAST)}})
            other.close()
        finally:
            front.send_signal(signal.SIGINT)  # the front's Ctrl-C: it stops its workers
            front.wait(timeout=60)
    # ahead of the other artist's waiting job (high priority), behind the running one
    assert r["queued"] and r["queued"][0] == [0, "farm: 1/1 GPUs busy, 2 jobs waiting"]
    assert r["state"]["status"] == "done", r["state"]
    obj = r["object"]
    assert obj["uv_layers"] >= 1 and obj["images"] >= 1 and obj["faces"] > 0
    assert {"Base Color", "Roughness", "Metallic"} <= set(obj["bsdf_linked"])


@pytest.mark.parametrize("mode", ["generate", "stylize", "edit"])
def test_the_newest_blender_runs_each_mode_with_no_deprecation_warning(extension, tmp_path, newest_blender, mode):
    from PIL import Image

    Image.new("RGB", (64, 64), (30, 90, 200)).save(tmp_path / "style.png")
    op = {"prompt": "" if mode == "stylize" else "a red box", "overrides": json.dumps(FAST)}
    if mode == "stylize":
        op["style_image"] = str(tmp_path / "style.png")
    r = drive(extension, mode, tmp_path, {"op": op}, blender=newest_blender)
    assert r["op"] == ["FINISHED"], r["state"]
    obj = r["object"]
    assert obj["uv_layers"] >= 1 and obj["images"] >= 1 and obj["packed"] and obj["collection"] == ["Conjure"]
    if mode == "generate":
        assert {"Base Color", "Roughness", "Metallic", "Normal"} <= set(obj["bsdf_linked"])
