import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backend.eval.targets import write_target
from backend.errors import ConfigError
from backend.pipeline.config import resolve
from backend.job import MODES, PBR_LIT_SHARE, Job, Prompt, output_overrides, parse_job, read_job
from backend.pipeline.preset_files import preset_names
from backend.protocol import JobError
from backend.server.jobs import run_job

from .helpers import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def target_dir(tmp_path: Path) -> Path:
    write_target("blocks", tmp_path)
    return tmp_path


def _oracle(**extra) -> dict:
    return {"version": 1, "guidance": "oracle", "oracle": {"target_mesh": "blocks.glb"}, **extra}


@pytest.mark.parametrize("job, field", [
    ({"version": 2}, "version"),
    ({"colour": "red"}, "colour"),
    ({"mode": "sculpt"}, "mode"),
    ({"prompt": {"text": "   "}}, "prompt"),
    ({"prompt": {"text": "a chair", "images": ["nope.png"]}}, "prompt.images[0]"),
    ({"prompt": {"text": "a chair", "weights": {"smell": 1.0}}}, "prompt.weights.smell"),
    ({"prompt": {"text": "a chair"}, "seed": "zero"}, "seed"),
    ({"mode": "edit", "prompt": {"text": "make it red"}}, "mesh"),
    ({"guidance": "oracle"}, "oracle.target_mesh"),
])
def test_invalid_jobs_name_the_field(tmp_path, job, field):
    with pytest.raises(JobError) as err:
        read_job({"version": 1, **job}, tmp_path)
    assert err.value.field == field


def test_wrong_file_type_rejected(target_dir):
    (target_dir / "notes.txt").write_text("hi")
    with pytest.raises(JobError, match="unsupported file type"):
        read_job(_oracle(oracle={"target_mesh": "notes.txt"}), target_dir)


def test_valid_job_resolves_paths(target_dir):
    job = read_job(_oracle(), target_dir)
    assert Path(job.oracle.target_mesh).is_absolute() and job.preset == "draft"


def test_a_job_written_out_reads_back_to_the_same_record(target_dir):
    job = read_job(_oracle(prompt={"text": "a chair", "weights": {"audio": 0.5}}, seed=7,
                           overrides={"phase1.iterations": 3}), target_dir)
    assert parse_job(json.loads(json.dumps(job.to_json()))) == job
    assert job.prompt.weights.audio == 0.5 and job.prompt.weights.text == 1.0  # the default, from one place
    assert parse_job({"prompt": {"text": "a cup"}}) == Job(prompt=Prompt(text="a cup"))
    assert Job().preset == "draft" and Job().mode == "generate"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("preset", preset_names())
def test_the_panels_output_settings_are_keys_every_preset_takes(preset, mode):
    """The add-on's face budget, texture size and PBR switch (backend.job.output_overrides)
    land where the typed config reads them, whichever preset and mode."""
    cfg = resolve(preset, output_overrides(max_faces=300, texture_size=128, pbr=True), mode)
    assert (cfg.export.max_faces, cfg.export.texture_size) == (300, 128)
    assert cfg.phase3.material == "pbr" and cfg.phase3.shading.lambertian == PBR_LIT_SHARE
    assert output_overrides() == {}  # 0 and off: the preset's own


def test_overrides_checked_against_preset():
    assert resolve("draft", {"phase1.iterations": 7}).phase1.iterations == 7
    assert resolve("draft", {"phase2.losses.sdf_entropy": 2}).phase2.losses["sdf_entropy"].weight == 2
    for bad, msg in [({"phase1.iterashuns": 7}, "unknown key"), ({"phase1.iterations": "many"}, "expected int"),
                     ({"phase9.lr": 1.0}, "unknown key"), ({"phase1.losses.magic": 1.0}, "unknown loss")]:
        with pytest.raises(ConfigError, match=msg):
            resolve("draft", bad)
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve("ultra")


def test_mode_presets_lie_over_the_preset_table_by_table():
    base, edit = resolve("standard"), resolve("standard", {"phase2.cameras.fov": [20, 30]}, "edit")
    cams = edit.phase2.cameras
    assert cams.elevation != base.phase2.cameras.elevation  # set by the edit mode
    assert cams.azimuth == base.phase2.cameras.azimuth  # kept from the preset
    assert cams.fov == (20, 30)  # the job's override comes last
    assert edit.phase2.losses["identity"].weight > 0 and "ms" not in edit.phase2.losses  # losses: replaced
    assert edit.phase2.tet_res == base.phase2.tet_res


def test_bad_override_fails_before_work(target_dir, tmp_path):
    events = []
    out = tmp_path / "out"
    assert run_job(_oracle(overrides={"phase1.nope": 1}), target_dir, out, events.append) is None
    assert events[-1]["type"] == "error" and events[-1]["code"] == "invalid_job"
    assert "phase1.nope" in events[-1]["message"] and not (out / "checkpoints").exists()


def test_cli_reports_bad_json(tmp_path):
    job = tmp_path / "job.json"
    job.write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "backend", "run", str(job)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr


def test_doctor_reports_environment():
    """Known answers: this interpreter, the pinned packages of make test's venv
    (requirements/test.txt) as installed, no CUDA here, the presets on disk."""
    import platform

    import torch

    from operators.install_plan import pins as read_pins

    proc = subprocess.run([sys.executable, "-m", "backend", "doctor"], cwd=ROOT, capture_output=True, text=True)
    report = json.loads(proc.stdout)
    pins = read_pins(ROOT / "requirements" / "test.txt")
    assert report["python"] == platform.python_version()
    assert report["packages"]["torch"] == torch.__version__ and report["packages"]["torch"].startswith(pins["torch"])
    assert {k: report["packages"][k] for k in ("diffusers", "transformers", "trimesh", "numpy", "vtk")} == \
        {k: pins[k] for k in ("diffusers", "transformers", "trimesh", "numpy", "vtk")}
    assert report["cuda"] is torch.cuda.is_available() and report["devices"][-1] == "cpu"
    assert report["presets"] == preset_names()  # fastest first (their recorded estimates)
    assert sorted(report["presets"]) == sorted(p.stem for p in (ROOT / "backend" / "pipeline" / "presets").glob("*.json"))
    assert "torch" in report["rasterizers"]


def test_cancel_then_resume_finishes(target_dir, tmp_path):
    out = tmp_path / "out"
    events: list[dict] = []
    steps = iter(range(10_000))
    cancel_at = 20  # in phase II (phase I has 12 steps)
    result = run_job(_oracle(overrides=TINY), target_dir, out, events.append, lambda: next(steps) >= cancel_at)
    assert result is None and events[-1]["type"] == "cancelled"
    assert (out / "checkpoints" / "phase1.pt").exists() and (out / "checkpoints" / "current.pt").exists()
    events.clear()
    result = run_job(_oracle(overrides=TINY), target_dir, out, events.append)
    assert result is not None and Path(result["glb"]).exists()
    logs = [e["message"] for e in events if e["type"] == "log"]
    assert any("phase1: loaded from checkpoint" in m for m in logs)
    assert any("phase2: resuming at step" in m for m in logs)
    first_p2 = next(e for e in events if e["type"] == "progress" and e["phase"] == "phase2")
    assert first_p2["step"] > 1
    for name in ("result.glb", "preview.png", "turntable.png", "events.jsonl", "job.json", "config.json"):
        assert (out / name).exists(), name
    stored = json.loads((out / "job.json").read_text())
    assert stored["oracle"]["target_mesh"].startswith("inputs/") and (out / stored["oracle"]["target_mesh"]).exists()


def _tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(_tensors(value, f"{prefix}{key}."))
        elif torch.is_tensor(value):
            out[f"{prefix}{key}"] = value
    return out


def test_a_resumed_run_ends_bit_for_bit_where_an_uninterrupted_one_does(target_dir, tmp_path, deterministic):
    """A checkpoint holds the parameters, the optimiser and every random stream (the phase's
    cameras, each guidance term's timesteps and noise)."""
    run_job(_oracle(overrides=TINY), target_dir, tmp_path / "whole")
    steps = iter(range(10_000))
    cut = tmp_path / "cut"
    assert run_job(_oracle(overrides=TINY), target_dir, cut, lambda e: None, lambda: next(steps) >= 12 + 6) is None
    events: list[dict] = []
    assert run_job(_oracle(overrides=TINY), target_dir, cut, events.append) is not None
    assert any("phase2: resuming at step" in e.get("message", "") for e in events)
    for phase in ("phase2", "phase3"):
        whole = _tensors(torch.load(tmp_path / "whole" / "checkpoints" / f"{phase}.pt", weights_only=False)["state"])
        resumed = _tensors(torch.load(cut / "checkpoints" / f"{phase}.pt", weights_only=False)["state"])
        assert whole.keys() == resumed.keys()
        assert [k for k in whole if not torch.equal(whole[k], resumed[k])] == [], phase


@pytest.mark.slow
def test_killed_process_resumes(target_dir, tmp_path):
    import signal
    import time

    job = target_dir / "job.json"
    overrides = {**TINY, "phase2.iterations": 40}
    job.write_text(json.dumps(_oracle(overrides=overrides)))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "backend", "run", str(job), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (out / "checkpoints" / "current.pt").exists() and (out / "checkpoints" / "phase1.pt").exists():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resuming at step" in done.stdout and (out / "result.glb").exists()


def test_out_of_gpu_memory_mid_run_keeps_the_step_and_resumes(target_dir, tmp_path, monkeypatch):
    from backend.pipeline.phases import GeometryPhase

    real_step = GeometryPhase.step
    calls = iter(range(10_000))

    def failing_step(self, step):  # noqa: ANN001 (the third phase-II step runs out of memory once)
        if step == 3 and next(calls) == 0:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self, step)

    monkeypatch.setattr(GeometryPhase, "step", failing_step)
    out, events = tmp_path / "out", []
    assert run_job(_oracle(overrides=TINY), target_dir, out, events.append) is None
    err = events[-1]
    assert err["code"] == "out_of_memory" and "phase2 at step 4 of 10" in err["message"]
    assert "phase2.batch" in err["hint"] and "resume at step 4" in err["hint"]
    assert torch.load(out / "checkpoints" / "current.pt", weights_only=False)["step"] == 3
    events.clear()
    assert run_job(_oracle(overrides=TINY), target_dir, out, events.append) is not None
    assert next(e for e in events if e["type"] == "progress" and e["phase"] == "phase2")["step"] == 4


def test_budget_names_a_preset_that_fits(monkeypatch, tmp_path):
    from backend.pipeline import memory_budget as budget

    table = tmp_path / "estimates.json"
    table.write_text(json.dumps({"draft": {"peak_gb": 4.0}, "standard": {"peak_gb": 8.5}, "high": {"peak_gb": 20.0}}))
    monkeypatch.setattr(budget, "TABLE", table)
    assert budget.shortfall("standard", 9.5) is None  # 8.5 + 1 GB headroom fits exactly
    message, hint = budget.shortfall("high", 12.0)
    assert message == ("preset 'high' needs about 20.0 GB of GPU memory (estimate) plus 1 GB of headroom, "
                       "and 12.0 GB are free")
    assert hint.startswith("use preset 'standard' (about 8.5 GB)")
    assert budget.shortfall("draft", 3.0)[1].startswith("no preset fits")
    assert budget.shortfall("unrecorded", 1.0) is None


def test_a_changed_job_never_resumes_stale_checkpoints(target_dir, tmp_path):
    out, events = tmp_path / "out", []

    def run(**overrides) -> list[str]:
        events.clear()
        seed = overrides.pop("seed", 0)
        assert run_job(_oracle(overrides={**TINY, **overrides}, seed=seed), target_dir, out, events.append) is not None
        return [e["message"] for e in events if e["type"] == "log"]

    run()
    logs = run()  # unchanged: every phase comes from its checkpoint
    assert all(any(f"{k}: loaded from checkpoint" in m for m in logs) for k in ("phase1", "phase2", "phase3"))
    logs = run(**{"phase2.tet_res": 20})
    assert "phase2: the job changed since its checkpoint (config): running phase2 and the phases after it again" \
        in logs
    assert any("phase1: loaded from checkpoint" in m for m in logs)
    assert not any(f"{k}: loaded from checkpoint" in m for m in logs for k in ("phase2", "phase3"))
    logs = run(**{"phase2.tet_res": 20}, seed=1)
    assert any(m.startswith("phase1: the job changed since its checkpoint (seed)") for m in logs)
    assert not any("loaded from checkpoint" in m for m in logs)


@pytest.mark.parametrize("extra,field,message", [
    ({"overrides": {"phase1.iterations": -5}}, "phase1.iterations", "-5 is outside [0, 1e+06]"),
    ({"overrides": {"phase1.iterations": 10 ** 12}}, "phase1.iterations", "is outside [0, 1e+06]"),
    ({"overrides": {"phase1.lr": float("nan")}}, "phase1.lr", "nan is not a finite number"),
    ({"overrides": {"progress.checkpoint_every": 0}}, "progress.checkpoint_every", "0 is outside [1, 1e+06]"),
    ({"overrides": {"export.texture_size": 0}}, "export.texture_size", "0 is outside [16, 8192]"),
    ({"overrides": {"phase2.tet_res": 1}}, "phase2.tet_res", "1 is outside [4, 512]"),
    ({"overrides": {"phase1.cameras.radius": -2.5}}, "phase1.cameras.radius", "-2.5 is outside [0.1, 100]"),
    ({"overrides": {"phase2.cameras.radius": [2.0, 1.5]}}, "phase2.cameras.radius", "a range [lo, hi] needs lo <= hi"),
    ({"overrides": {"phase1.timesteps.t_min": 0.99}}, "phase1.timesteps.t_min", "t_min must be below t_max"),
    ({"overrides": {"phase1.losses.aug_sds": -1}}, "phase1.losses.aug_sds.weight", "must be >= 0"),
    ({"overrides": {"phase1.batch": 2.5}}, "phase1.batch", "expected int, got float"),
    ({"seed": 10 ** 30}, "seed", "is outside [0, 9.22337e+18]"),  # 2^63 - 1, as schema prints bounds
    ({"device": "banana"}, "device", "use auto, cpu, cuda or cuda:N"),
    ({"preset": "nope", "overrides": {"phase1.iterations": 3}}, "preset", "unknown preset 'nope'"),
])
def test_every_bad_value_is_refused_before_work_with_its_field(target_dir, tmp_path, extra, field, message):
    events: list[dict] = []
    assert run_job(_oracle(**extra), target_dir, tmp_path / "out", events.append) is None
    err = events[-1]
    assert err["code"] == "invalid_job" and f"fix the field {field!r}" in err["hint"], err
    assert message in err["message"]
    assert not (tmp_path / "out" / "checkpoints").exists()  # no work started


def test_cli_broken_invocations_get_one_line_and_exit_2(tmp_path, capsys):
    from backend.__main__ import main

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"prompt": {"text": "caf\u00e9"}}'.encode("latin-1"))
    good = tmp_path / "job.json"
    good.write_text(json.dumps({"version": 1, "prompt": {"text": "x"}}))
    a_file = tmp_path / "taken"
    a_file.write_text("")
    cases = [([str(deep)], "[0][0]: nested deeper than 32 levels"), ([str(latin)], "is not UTF-8 text"),
             ([str(tmp_path)], "is a folder; give the job's .json file"),
             ([str(tmp_path / "missing.json")], "job file not found"),
             ([str(good), "--out", str(a_file)], "is a file, not a folder"),
             ([str(good), "--out", str(a_file / "sub")], "cannot write to --out")]
    for args, message in cases:
        assert main(["run", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, (args, err)


def test_disk_full_is_reported_with_sizes_leaves_no_partial_file_and_resumes(target_dir, tmp_path):
    import subprocess

    disk = tmp_path / "small_disk"
    disk.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a size-limited file system here: {made.stderr.strip()}")
    try:
        out, events = disk / "out", []
        assert run_job(_oracle(overrides=TINY), target_dir, out, events.append) is None
        err = events[-1]
        assert err["code"] == "disk_full" and err["message"].startswith(f"disk full at {out / 'checkpoints'}: needs about")
        assert "resumes from its last checkpoint" in err["hint"]
        assert not [p.name for p in out.rglob("*partial*")]  # no half-written file left
        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
        events.clear()
        assert run_job(_oracle(overrides=TINY), target_dir, out, events.append) is not None
        assert (out / "result.glb").stat().st_size > 1000
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_loss_that_is_not_finite_stops_the_phase_before_the_update(target_dir, tmp_path, monkeypatch):
    from backend.pipeline.phases import NeRFPhase

    phase_losses = NeRFPhase.losses

    def poisoned(self, step):  # noqa: ANN001 (the 3rd step's SDS loss is NaN)
        out = phase_losses(self, step)
        return {**out, "aug_sds": out["aug_sds"] * float("nan")} if step == 2 else out

    monkeypatch.setattr(NeRFPhase, "losses", poisoned)
    events: list[dict] = []
    assert run_job(_oracle(overrides=TINY), target_dir, tmp_path / "nan", events.append) is None
    err = events[-1]
    assert err["code"] == "pipeline" and err["message"] == "nerf phase, step 3: the loss aug_sds is not finite"
    assert err["hint"].startswith("lower phase1.lr or the weight of aug_sds") and "--restart" in err["hint"]
