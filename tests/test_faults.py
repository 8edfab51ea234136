"""Faults around a running job: its client killed hard. The job must end checkpointed and
resumable, with nothing lost beyond the checkpoint interval."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from backend.server.jobs import run_job

from .helpers import ROOT, TINY, oracle_job

PARENT = """
import json, subprocess, sys, time
job, base, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
backend = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--stdio"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
line = {"v": 1, "type": "submit", "id": "j", "job": job, "base_dir": base, "out_dir": out}
backend.stdin.write((json.dumps(line) + "\\n").encode())
backend.stdin.flush()
print(backend.pid, flush=True)
time.sleep(600)
"""


def _events(out: Path) -> list[dict]:
    path = out / "events.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited
        return f.read().split()[2] != "Z"


@pytest.mark.slow
def test_client_killed_hard_mid_phase_leaves_a_checkpointed_resumable_job(tmp_path):
    job = oracle_job(tmp_path, overrides={**TINY, "phase1.iterations": 40, "progress.checkpoint_every": 4})
    out = tmp_path / "out"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, json.dumps(job), str(tmp_path), str(out)], cwd=ROOT,
                              stdout=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    backend_pid = int(parent.stdout.readline())
    deadline = time.monotonic() + 240
    while not any(e["type"] == "progress" and e["step"] >= 6 for e in _events(out)):
        assert time.monotonic() < deadline and parent.poll() is None, "the job did not start"
        time.sleep(0.2)
    parent.send_signal(signal.SIGKILL)  # Blender killed: no goodbye on the pipe
    parent.wait()
    deadline = time.monotonic() + 60
    while _alive(backend_pid):
        assert time.monotonic() < deadline, "the backend outlived its parent"
        time.sleep(0.2)
    events = _events(out)
    last_step = max(e["step"] for e in events if e["type"] == "progress")
    assert events[-1]["type"] == "cancelled" and f"at step {last_step}" in events[-1]["message"]
    events.clear()
    assert run_job(job, tmp_path, out, events.append) is not None  # resumes where it stopped
    resumed = next(e for e in events if e["type"] == "progress")
    assert resumed["phase"] == "phase1" and resumed["step"] == last_step + 1


def _run_cli(job_path: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "backend", "run", str(job_path), "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _kill_when(proc: subprocess.Popen, out: Path, reached, timeout: float = 300) -> list[dict]:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not reached(_events(out)):
        assert time.monotonic() < deadline and proc.poll() is None, "the point to kill at never came"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return _events(out)


@pytest.mark.slow
def test_kill_9_in_every_phase_and_in_export_then_a_valid_result(tmp_path):
    import random

    import trimesh

    every = 4
    job = oracle_job(tmp_path, overrides={**TINY, "phase1.iterations": 16, "phase2.iterations": 12,
                                          "phase3.iterations": 12, "progress.checkpoint_every": every})
    job_path = tmp_path / "job.json"
    job_path.write_text(json.dumps(job))
    out = tmp_path / "out"
    rng = random.Random(7)
    for phase, total in (("phase1", 16), ("phase2", 12), ("phase3", 12)):
        at = rng.randint(2, total - 1)
        events = _kill_when(_run_cli(job_path, out), out, lambda ev, p=phase, a=at: any(
            e["type"] == "progress" and e["phase"] == p and e["step"] >= a for e in ev))
        killed = max(e["step"] for e in events if e["type"] == "progress" and e["phase"] == phase)
        n = len(events)
        events = _kill_when(_run_cli(job_path, out), out, lambda ev, p=phase: any(
            e["type"] == "progress" and e["phase"] == p for e in ev[n:]))
        restart = next(e["step"] for e in events[n:] if e["type"] == "progress" and e["phase"] == phase) - 1
        assert killed - every < restart <= killed, (phase, killed, restart)  # lost less than one interval
    # The last kill comes during export: after phase III's last step, before the result.
    _kill_when(_run_cli(job_path, out), out, lambda ev: any(
        e["type"] == "progress" and e["phase"] == "phase3" and e["step"] == 12 for e in ev))
    # Whatever exists is whole: a SIGKILL can leave a write's temporary file, never a torn target.
    assert not (out / "result.glb").exists() or trimesh.load(out / "result.glb").is_empty is False
    for checkpoint in (out / "checkpoints").glob("[!.]*.pt"):
        torch.load(checkpoint, weights_only=True)
    assert subprocess.run([sys.executable, "-m", "backend", "run", str(job_path), "--out", str(out)], cwd=ROOT,
                          capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}).returncode == 0
    assert not list(out.rglob("*partial*"))  # the next run cleared any temporary leftovers
    scene = trimesh.load(out / "result.glb")
    mesh = next(iter(scene.geometry.values())) if hasattr(scene, "geometry") else scene
    assert len(mesh.faces) > 100 and mesh.visual.uv is not None and mesh.visual.material.baseColorTexture is not None
