"""Job kinds a farm worker runs. Each is `run(task, folder, emit, should_cancel, stores)`:
it works in `folder` (the job's folder on the worker), reports through `emit` and ends with
a done, cancelled or error event. `task` is the JSON-able description the front queued."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

Emit = Callable[[dict], None]


def run_conjure(task: dict, folder: Path, emit: Emit, should_cancel: Callable[[], bool], stores: dict) -> None:
    """A Conjure job: folder/upload holds what the client sent, folder/out is the job folder
    (resumed when it holds checkpoints). Confined like every job from the network."""
    from ..server.jobs import run_job

    run_job(task["job"], folder / "upload", folder / "out", emit, should_cancel, stores=stores, confined=True)


def run_sleep(task: dict, folder: Path, emit: Emit, should_cancel: Callable[[], bool], stores: dict) -> None:
    """A trivial job for checking a farm and simulating its scheduling: `steps` progress
    events `seconds` apart, cancellable between steps; no GPU, no files."""
    steps, seconds = int(task.get("steps", 1)), float(task.get("seconds", 0.0))
    emit({"type": "accepted", "kind": "sleep"})
    t0 = time.monotonic()
    for step in range(steps):
        if should_cancel():
            emit({"type": "cancelled", "message": f"cancelled at step {step}"})
            return
        time.sleep(seconds)
        rate = (time.monotonic() - t0) / (step + 1)
        emit({"type": "progress", "phase": "sleep", "step": step + 1, "total": steps, "losses": {},
              "eta_s": round(rate * (steps - step - 1), 3)})
    emit({"type": "done"})


KINDS: dict[str, Callable[[dict, Path, Emit, Callable[[], bool], dict], None]] = {
    "conjure": run_conjure, "sleep": run_sleep}
