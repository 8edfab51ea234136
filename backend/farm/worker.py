"""The farm's worker actor: one per GPU, long-lived, keeping its loaded models between jobs.

`run` is a Ray streaming generator. The job runs in a thread of the actor; what it reports
comes back to the front as it happens, as messages:
  {"event": {...}}                                   a job event (progress, log, result, ...)
  {"files": {relpath: bytes}, "removed": [relpath]}  the job folder's changes since the last
                                                     message (checkpoints, preview, outputs)
Files are sent before the event that follows them, so by the time the front forwards a
checkpoint's progress event or the result, the front's folder holds those files: when the
worker dies, the job resumes elsewhere from what the front has.

With a shared folder (every node mounts the front's job folders at the same path) the job
runs in place and only events travel.
"""
from __future__ import annotations

import os
import queue
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from .kinds import KINDS

SKIPPED = ("events.jsonl", ".events.reserve")  # the front keeps its own event log (and its reserve)


class FolderSync:
    """What changed in a folder since the last call: files by (size, mtime), deletions.
    Interrupted atomic writes (".name.partial.ext") are never sent."""

    def __init__(self, root: Path) -> None:
        self.root, self.seen = root, {}

    def changes(self) -> tuple[dict[str, bytes], list[str]]:
        now: dict[str, tuple[int, int]] = {}
        for path in self.root.rglob("*"):
            if path.is_file() and ".partial" not in path.name and path.name not in SKIPPED:
                st = path.stat()
                now[path.relative_to(self.root).as_posix()] = (st.st_size, st.st_mtime_ns)
        changed = {}
        for rel, sig in now.items():
            if self.seen.get(rel) != sig:
                try:
                    changed[rel] = (self.root / rel).read_bytes()
                except FileNotFoundError:  # replaced between the scan and the read: next time
                    continue
                self.seen[rel] = sig
        removed = [rel for rel in self.seen if rel not in now]
        for rel in removed:
            del self.seen[rel]
        return changed, removed


def write_files(root: Path, files: dict[str, bytes], removed: list[str] = ()) -> None:
    """Apply a worker's changes under root, each file whole or not at all; names that would
    leave root are refused."""
    from ..atomic import atomic_path

    base = root.resolve()
    for rel, data in files.items():
        target = (root / rel).resolve()
        if not target.is_relative_to(base) or target == base:
            raise ValueError(f"{rel!r} is outside the job folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    for rel in removed:
        target = (root / rel).resolve()
        if target.is_relative_to(base) and target != base:
            target.unlink(missing_ok=True)


def relocate(event: dict, local: str, front: str) -> dict:
    """The event with paths into the worker's copy of the job folder (accepted.job,
    result.glb, preview, ...) pointing at the front's copy instead."""
    if not front:
        return event
    return {k: front + v[len(local):] if isinstance(v, str) and (v == local or v.startswith(local + "/")) else v
            for k, v in event.items()}


_END = object()


class FarmWorker:
    """Wrapped by ray.remote in front.py (resources decided there)."""

    def __init__(self) -> None:
        self.stores: dict = {}
        self.flags: dict[str, threading.Event] = {}
        self.ran: list[str] = []
        self.scratch = Path(tempfile.mkdtemp(prefix="conjure-worker-"))

    def info(self) -> dict:
        import ray

        gpus = ray.get_gpu_ids()
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
                "device": f"cuda ({', '.join(map(str, gpus))})" if gpus else "cpu"}

    def run(self, job_id: str, task: dict, inputs: dict) -> Iterator[dict]:
        """task: {"kind", ...the kind's fields, "folder": shared path or "out": the front's
        job folder (paths in events are rewritten to it)}; inputs:
        {"upload": {name: bytes}, "out": {relpath: bytes}} (the front's copy of the job folder)."""
        self.ran.append(job_id)
        flag = self.flags.setdefault(job_id, threading.Event())  # a cancel may come first
        shared = task.get("folder")
        folder = Path(shared) if shared else self.scratch / job_id
        if not shared:
            shutil.rmtree(folder, ignore_errors=True)
            write_files(folder / "upload", inputs.get("upload", {}))
            write_files(folder / "out", inputs.get("out", {}))
        sync = None if shared else FolderSync(folder / "out")
        if sync is not None:
            sync.changes()  # what the front sent is what it has
        events: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                KINDS[task["kind"]](task, folder, events.put, flag.is_set, self.stores)
            except BaseException as exc:  # noqa: BLE001 (reported as the job's error; the actor goes on)
                from ..server.jobs import error_event

                events.put(error_event(exc, "internal", "the job's folder keeps its checkpoints: submit it again"))
            finally:
                events.put(_END)

        thread = threading.Thread(target=work, name=f"job-{job_id}", daemon=True)
        thread.start()
        try:
            while (event := events.get()) is not _END:
                if sync is not None:
                    files, removed = sync.changes()
                    if files or removed:
                        yield {"files": files, "removed": removed}
                    event = relocate(event, str(folder / "out"), task.get("out", ""))
                yield {"event": event}
            thread.join()
        finally:
            self.flags.pop(job_id, None)
            if not shared:
                shutil.rmtree(folder, ignore_errors=True)

    def cancel(self, job_id: str) -> None:
        """Stop the job within a step (or at its start, when the cancel overtakes it)."""
        self.flags.setdefault(job_id, threading.Event()).set()

    def free(self) -> None:
        from ..server.service import release_models

        release_models(self.stores)

    def jobs_run(self) -> list[str]:
        """Every job id this worker started, in order (the simulation's no-loss check)."""
        return list(self.ran)
