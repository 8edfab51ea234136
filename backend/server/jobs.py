"""Job folders: the validated job with its inputs copied in, events.jsonl, checkpoints and
outputs. Running a job in a folder that already has checkpoints resumes it; running a
changed job there first moves the old job's results aside (previous/)."""
from __future__ import annotations

import filecmp
import json
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..atomic import DiskFull, copy_atomic, is_disk_full, write_atomic
from ..errors import (Cancelled, ConfigError, InputFileError, MeshError, ModelNotAvailable, OutOfGPUMemory,
                      PipelineError, is_out_of_memory)
from ..job import Job, read_job
from ..progress import Stages
from ..protocol import JobError

if TYPE_CHECKING:
    from ..pipeline.settings import Config

Emit = Callable[[dict], None]


RESERVE = 64 << 10  # bytes held beside events.jsonl for the events that report a full disk
RESULTS = ("result.glb", "preview.png", "turntable.png", "metrics.json")  # what a finished run leaves


class EventLog:
    """Appends every event to events.jsonl (with a timestamp) and forwards it. Each line is
    whole or absent: a write the disk has no room for is cut back off, then RESERVE bytes
    kept in `.events.reserve` since the log was opened are given up and the line written
    again (the event that says the disk is full gets written)."""

    def __init__(self, path: Path, forward: Emit | None = None) -> None:
        self.path, self.forward = path, forward
        self.reserve = path.with_name(".events.reserve")
        try:
            if not self.reserve.exists():
                self.reserve.write_bytes(os.urandom(RESERVE))  # random: no file system compresses it away
        except OSError:
            self.reserve.unlink(missing_ok=True)  # already full: nothing to hold

    def __call__(self, event: dict) -> None:
        event = {"time": round(time.time(), 3), **event}
        line = (json.dumps(event) + "\n").encode()
        if not self._append(line) and self.reserve.exists():
            self.reserve.unlink()
            self._append(line)
        if self.forward is not None:
            self.forward(event)

    def _append(self, line: bytes) -> bool:
        """False (and the file as it was) when the disk is full."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                done = 0
                while done < len(line):
                    done += os.write(fd, line[done:])
                return True
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                os.ftruncate(fd, size)  # no broken line for a reader
                return False
        finally:
            os.close(fd)


def prepare_job(job: Job, out_dir: Path) -> tuple[Job, "Config"]:
    """Check the job's device and overrides, copy its inputs under out_dir/inputs, write
    job.json (paths relative to out_dir, so the folder is self-contained: its one copy of
    the job) and config.json, then read each input once (InputFileError, a JobError, for one
    that cannot be used). -> (the job on its copies, resolved config). Raises JobError."""
    from ..pipeline.config import parse_config, resolve_data
    from ..pipeline.input_files import check_input_files

    from ..pipeline.prepare import resolve_device

    resolve_device(job.device)  # a device this machine does not have: JobError naming it
    try:
        data = resolve_data(job.preset, dict(job.overrides), job.mode)
        cfg = parse_config(data)
    except ConfigError as exc:
        field = exc.field or ("overrides" if job.overrides else "preset")
        raise JobError(field, str(exc).removeprefix(f"{field}: ")) from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = out_dir / "inputs"
    inputs.mkdir(exist_ok=True)
    copies, stored, new_inputs = {}, {}, False
    for i, (field, path) in enumerate(job.inputs()):
        src = Path(path).resolve()
        if src.parent == inputs.resolve():  # the folder's own copy (its job.json run again): used in place
            dst = inputs / src.name
        else:
            dst = inputs / f"{i:02d}_{src.name}"
            if not (dst.is_file() and filecmp.cmp(src, dst, shallow=False)):
                new_inputs |= dst.exists()
                copy_atomic(src, dst)
        copies[field], stored[field] = str(dst.resolve()), str(dst.relative_to(out_dir))
    job = job.with_inputs(copies)
    text = {"job.json": json.dumps(job.with_inputs(stored).to_json(), indent=2),
            "config.json": json.dumps(data, indent=2)}
    if new_inputs or any(_read(out_dir / name) not in (None, content) for name, content in text.items()):
        _set_aside(out_dir)
    for name, content in text.items():
        write_atomic(out_dir / name, content)
    check_input_files(job)  # the copies, so a refused file stays with the job for a look
    return job, cfg


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _set_aside(out_dir: Path) -> None:
    """The job changed: the previous job's results (and what described it) go to previous/,
    replacing older ones there, so none of them stands beside the new job.json."""
    found = [out_dir / name for name in (*RESULTS, "job.json", "config.json") if (out_dir / name).exists()]
    if not any(p.name in RESULTS for p in found):
        return
    aside = out_dir / "previous"
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    for p in found:
        os.replace(p, aside / p.name)


def error_event(exc: BaseException, code: str, hint: str = "") -> dict:
    return {"type": "error", "code": code, "message": str(exc), "hint": hint or getattr(exc, "hint", ""),
            "traceback": "".join(traceback.format_exception(exc))}


def run_job(raw: dict, base_dir: Path, out_dir: Path, forward: Emit | None = None,
            should_cancel: Callable[[], bool] = lambda: False, restart: bool = False,
            stores: dict | None = None, confined: bool = False) -> dict | None:
    """Read a job's JSON (files relative to base_dir; confined: a job from the network, which
    may only read files inside base_dir, backend/job.read_job) and run it into out_dir:
    run_parsed, an invalid job reported there as its error event."""
    try:
        job = read_job(raw, base_dir, confined)
    except JobError as exc:
        out_dir.mkdir(parents=True, exist_ok=True)
        EventLog(out_dir / "events.jsonl", forward)(error_event(exc, "invalid_job", f"fix the field {exc.field!r} "
                                                                                  "in the job"))
        return None
    return run_parsed(job, out_dir, forward, should_cancel, restart, stores)


def run_parsed(job: Job, out_dir: Path, forward: Emit | None = None, should_cancel: Callable[[], bool] = lambda: False,
               restart: bool = False, stores: dict | None = None) -> dict | None:
    """Run one job into out_dir. Returns the result paths, or None after an error or a
    cancel (both reported as events; the folder keeps everything needed to resume).
    `stores` keeps loaded models between jobs of a server (models.store.StoreKey ->
    ModelStore)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if restart:
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        (out_dir / "metrics.json").unlink(missing_ok=True)
    emit = EventLog(out_dir / "events.jsonl", forward)
    try:
        job, cfg = prepare_job(job, out_dir)
    except JobError as exc:
        unusable = isinstance(exc, InputFileError)
        emit(error_event(exc, "invalid_input" if unusable else "invalid_job",
                         exc.hint if unusable else f"fix the field {exc.field!r} in the job"))
        return None
    except Exception as exc:  # noqa: BLE001 (a full disk while copying the inputs, ...)
        return _failed(exc, emit, out_dir)
    emit({"type": "accepted", "job": str(out_dir), "mode": job.mode, "preset": job.preset})
    from ..pipeline.prepare import prepare
    from ..pipeline.runner import Runner

    try:
        measure = measure_file = None
        if job.guidance == "oracle":
            from ..eval.oracle_report import file_report as measure_file, oracle_report as measure
        run = prepare(job, cfg, out_dir, lambda message: emit({"type": "log", "message": message}), stores,
                      Stages(emit, should_cancel, "input"))
        result = Runner(run, emit, should_cancel, measure, measure_file).run()
    except ModelNotAvailable as exc:
        emit(error_event(exc, "model_missing", exc.hint))
        return None
    except MeshError as exc:
        emit(error_event(exc, "invalid_input", exc.hint))
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
        return _failed(exc, emit, out_dir)
    emit({"type": "result", **{k: v for k, v in result.items() if k != "metrics"}})
    emit({"type": "done"})
    return result


def _failed(exc: Exception, emit: Emit, out_dir: Path) -> None:
    """Report a failure no earlier handler named: a full disk, memory, or the unexpected."""
    if is_disk_full(exc):
        full = exc if isinstance(exc, DiskFull) else DiskFull(out_dir)
        emit(error_event(full, "disk_full", "free disk space, then run the same job again: it resumes from "
                                            "its last checkpoint"))
        return None
    oom = is_out_of_memory(exc)
    emit(error_event(exc, "out_of_memory" if oom else "internal",
                     "use the draft preset or free memory" if oom else
                     "an unexpected failure: re-running resumes from the last checkpoint; if it stops at the "
                     "same place again, the traceback in events.jsonl says why"))
    return None
