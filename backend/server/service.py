"""The job service behind every transport: a FIFO queue, one worker thread that runs one
job at a time, cooperative cancel, and model stores kept between jobs until "free".

Transports (stdio.py, http.py) turn protocol messages into calls here and forward the
events it emits; every job event carries the job's id.
"""
from __future__ import annotations

import gc
import queue
import threading
from pathlib import Path
from typing import Callable

from .. import job as jobs_schema, protocol
from ..job import MODALITIES, MODES, Job, read_job
from .jobs import error_event, run_parsed

Emit = Callable[[dict], None]


def capabilities() -> dict:
    from ..pipeline.preset_files import preset_names

    caps = {"protocol": protocol.PROTOCOL_VERSION, "job_version": jobs_schema.VERSION, "modes": list(MODES),
            "guidance": list(jobs_schema.GUIDANCE_MODES), "presets": preset_names(),
            "modalities": list(MODALITIES), "devices": ["cpu"]}
    try:
        import torch

        caps["devices"] += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return caps


def release_models(stores: dict) -> None:
    """Drop a process's cached model stores and give their GPU memory back."""
    stores.clear()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


class JobService:
    shared_between_users = False  # one queue, first come first served (the farm's front is fair)

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self._queue: queue.Queue[tuple[str, Job, str] | None] = queue.Queue()
        self._cancel: dict[str, threading.Event] = {}
        self._pending: list[str] = []
        self._current: str | None = None
        self._lock = threading.Lock()
        self.stores: dict = {}  # models.store.StoreKey -> ModelStore, reused across jobs
        self._worker = threading.Thread(target=self._work, name="conjure-jobs", daemon=True)
        self._worker.start()

    def submit(self, job_id: str, raw: dict, base_dir: str, out_dir: str, confined: bool = False) -> None:
        """Read and queue a job; an invalid one is answered at once (error invalid_job, field
        named). confined: from the network, the job reads only files inside base_dir."""
        try:
            job = read_job(raw, base_dir, confined)
        except protocol.JobError as exc:
            self.emit({**error_event(exc, "invalid_job", f"fix the field {exc.field!r} in the job"), "id": job_id})
            return
        with self._lock:
            if job_id in self._cancel:
                self.emit({"type": "error", "id": job_id, "code": "busy", "message": f"job id {job_id!r} is in use",
                           "hint": "give each job a new id", "traceback": ""})
                return
            self._cancel[job_id] = threading.Event()
            position = len(self._pending) + (self._current is not None)  # jobs ahead of this one
            self._pending.append(job_id)
        self.emit({"type": "queued", "id": job_id, "position": position})
        self._queue.put((job_id, job, out_dir))

    def cancel(self, job_id: str) -> bool:
        """-> whether the job was queued or running (a queued job is dropped when reached; a
        running one stops within a step)."""
        with self._lock:
            flag = self._cancel.get(job_id)
        if flag is not None:
            flag.set()
        return flag is not None

    def free(self) -> None:
        """Drop every cached model (the next job loads what it needs again)."""
        release_models(self.stores)
        self.emit({"type": "freed"})

    def close(self, wait: bool = True) -> None:
        """Cancel everything, stop the worker after the current step."""
        with self._lock:
            for flag in self._cancel.values():
                flag.set()
        self._queue.put(None)
        if wait:
            self._worker.join()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job_id, job, out_dir = item
            with self._lock:
                self._pending.remove(job_id)
                self._current = job_id
                flag = self._cancel[job_id]

            def forward(event: dict, job_id: str = job_id) -> None:
                self.emit({**event, "id": job_id})

            try:
                if flag.is_set():
                    forward({"type": "cancelled", "message": "cancelled before it started"})
                else:
                    run_parsed(job, Path(out_dir), forward, flag.is_set, stores=self.stores)
            except BaseException as exc:  # noqa: BLE001 (the service outlives any job)
                forward(error_event(exc, "internal", "the job folder keeps its checkpoints: submit it again"))
            finally:
                with self._lock:
                    del self._cancel[job_id]
                    self._current = None
