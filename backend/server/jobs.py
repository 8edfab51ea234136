"""Job folders: the validated job with its inputs copied in, events.jsonl, checkpoints and
outputs. Running a job in a folder that already has checkpoints resumes it."""
from __future__ import annotations

import json
import shutil
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..atomic import DiskFull, is_disk_full
from ..errors import Cancelled, ConfigError, InputFileError, MeshError, ModelNotAvailable, OutOfGPUMemory, PipelineError
from ..protocol import JobError, job_inputs, set_input, validate_job

if TYPE_CHECKING:
    from ..pipeline.settings import Config

Emit = Callable[[dict], None]


class EventLog:
    """Appends every event to events.jsonl (with a timestamp) and forwards it."""

    def __init__(self, path: Path, forward: Emit | None = None) -> None:
        self.path, self.forward = path, forward

    def __call__(self, event: dict) -> None:
        event = {"time": round(time.time(), 3), **event}
        with self.path.open("a") as f:
            f.write(json.dumps(event) + "\n")
        if self.forward is not None:
            self.forward(event)


def prepare_job(raw: dict, base_dir: Path, out_dir: Path, confined: bool = False) -> tuple[dict, "Config"]:
    """Validate the job and its overrides, copy inputs under out_dir/inputs, write job.json
    (paths relative to out_dir, so the folder is self-contained) and config.json, then read
    each input once (InputFileError, a JobError, for one that cannot be used).
    -> (job with absolute paths, resolved config). Raises JobError / ConfigError."""
    from ..pipeline.config import parse_config, resolve_data
    from ..pipeline.input_files import check_input_files

    job = validate_job(raw, base_dir, confined)
    try:
        data = resolve_data(job["preset"], job["overrides"], job["mode"])
        cfg = parse_config(data)
    except ConfigError as exc:
        field = exc.field or ("overrides" if job["overrides"] else "preset")
        raise JobError(field, str(exc).removeprefix(f"{field}: ")) from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = out_dir / "inputs"
    inputs.mkdir(exist_ok=True)
    stored = json.loads(json.dumps(job))
    for i, (field, path) in enumerate(job_inputs(job)):
        src = Path(path)
        dst = inputs / f"{i:02d}_{src.name}"
        if src.resolve() != dst.resolve():
            shutil.copy2(src, dst)
        set_input(job, field, str(dst.resolve()))
        set_input(stored, field, str(dst.relative_to(out_dir)))
    (out_dir / "job.json").write_text(json.dumps(stored, indent=2))
    (out_dir / "config.json").write_text(json.dumps(data, indent=2))
    check_input_files(job)  # the copies, so a refused file stays with the job for a look
    return job, cfg


def error_event(exc: BaseException, code: str, hint: str = "") -> dict:
    return {"type": "error", "code": code, "message": str(exc), "hint": hint or getattr(exc, "hint", ""),
            "traceback": "".join(traceback.format_exception(exc))}


def run_job(raw: dict, base_dir: Path, out_dir: Path, forward: Emit | None = None,
            should_cancel: Callable[[], bool] = lambda: False, restart: bool = False,
            stores: dict | None = None, confined: bool = False) -> dict | None:
    """Run one job into out_dir. Returns the result paths, or None after an error or a
    cancel (both reported as events; the folder keeps everything needed to resume).
    `stores` keeps loaded models between jobs of a server (models.store.StoreKey ->
    ModelStore); `confined`: a job from the
    network, which may only read files inside base_dir (see protocol.validate_job)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if restart:
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        (out_dir / "metrics.json").unlink(missing_ok=True)
    emit = EventLog(out_dir / "events.jsonl", forward)
    try:
        job, cfg = prepare_job(raw, base_dir, out_dir, confined)
    except JobError as exc:
        unusable = isinstance(exc, InputFileError)
        emit(error_event(exc, "invalid_input" if unusable else "invalid_job",
                         exc.hint if unusable else f"fix the field {exc.field!r} in the job"))
        return None
    emit({"type": "accepted", "job": str(out_dir), "mode": job["mode"], "preset": job["preset"]})
    from ..pipeline.prepare import prepare
    from ..pipeline.runner import Runner

    try:
        measure = measure_file = None
        if job["guidance"] == "oracle":
            from ..eval.oracle_report import file_report as measure_file, oracle_report as measure
        run = prepare(job, cfg, out_dir, lambda message: emit({"type": "log", "message": message}), stores)
        result = Runner(run, emit, should_cancel, measure, measure_file).run()
    except ModelNotAvailable as exc:
        emit(error_event(exc, "model_missing", exc.hint))
        return None
    except MeshError as exc:
        emit(error_event(exc, "invalid_input", "give a surface mesh (GLB, OBJ, PLY or STL) with faces"))
        return None
    except Cancelled as exc:
        emit({"type": "cancelled", "message": str(exc)})
        return None
    except OutOfGPUMemory as exc:
        emit(error_event(exc, "out_of_memory"))
        return None
    except PipelineError as exc:
        emit(error_event(exc, "pipeline"))
        return None
    except MemoryError as exc:
        emit(error_event(exc, "out_of_memory", "use the draft preset or a smaller texture size"))
        return None
    except Exception as exc:  # noqa: BLE001 (reported with its traceback; the folder survives)
        if is_disk_full(exc):
            full = exc if isinstance(exc, DiskFull) else DiskFull(out_dir)
            emit(error_event(full, "disk_full", "free disk space, then run the same job again: it resumes from "
                                                "its last checkpoint"))
            return None
        oom = "out of memory" in str(exc).lower()
        emit(error_event(exc, "out_of_memory" if oom else "internal",
                         "use the draft preset or free GPU memory" if oom else
                         "an unexpected failure: re-running resumes from the last checkpoint; if it stops at the "
                         "same place again, the traceback in events.jsonl says why"))
        return None
    emit({"type": "result", **{k: v for k, v in result.items() if k != "metrics"}})
    emit({"type": "done"})
    return result
