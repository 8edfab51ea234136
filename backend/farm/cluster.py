"""The farm's records and its link to Ray: a job as the front tracks it, a worker slot, the
connection to the cluster, the errors that mean a worker or node died, and the files a job
takes to its worker."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .worker import SKIPPED

Emit = Callable[[dict], None]
BACKEND_DIR = Path(__file__).resolve().parents[1]


class FarmError(RuntimeError):
    """The farm cannot start (no cluster, no workers); the text says what to do."""


@dataclass
class FarmJob:
    id: str
    user: str
    priority: int
    task: dict  # what the worker runs (kinds.py), JSON-able
    upload: Path | None = None  # the client's files (sent to the worker with the job)
    out: Path | None = None  # the front's job folder: events.jsonl, checkpoints, outputs
    log: Emit | None = None
    seq: int = 0
    state: str = "queued"  # queued | running | done | cancelled | error
    worker: int | None = None
    attempts: int = 0  # dispatches (more than one: its worker died)
    cancel_requested: bool = False
    submitted: float = field(default_factory=time.time)
    dispatched: float | None = None
    ended: float | None = None
    dispatch_rank: int | None = None


@dataclass
class Slot:
    index: int
    actor: Any = None
    state: str = "starting"  # starting | idle | busy
    info: dict = field(default_factory=dict)  # pid, node, host, device
    job: str | None = None


def death_errors() -> tuple[type[BaseException], ...]:
    from ray import exceptions as rx

    return (rx.RayActorError, rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError, rx.LocalRayletDiedError)


def connect(address: str | None, **local: Any) -> None:
    """ray.init for a front: address of a running cluster, or "local" with `local` (resources,
    num_cpus, ...) to start one in this process. The front's own backend code is shipped
    to the workers, so every node runs the version the front runs."""
    import ray

    try:
        ray.init(address=address, logging_level="WARNING", namespace="conjure", include_dashboard=False,
                 runtime_env={"py_modules": [str(BACKEND_DIR)], "excludes": ["__pycache__"]}, **local)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise FarmError(f"cannot reach the Ray cluster at {address!r}: {exc}; start it with `ray start "
                        "--head` (docs/farm.md) or give --ray the head's address") from exc


def job_files(job: FarmJob) -> dict:
    """The front's copy of a job for its worker: the uploads and the job folder (with its
    checkpoints, so a job that comes back resumes); none without a folder of its own."""
    if job.upload is None or job.out is None:
        return {}

    def files(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.name not in skip and ".partial" not in p.name} if root.is_dir() else {}

    return {"upload": files(job.upload), "out": files(job.out, SKIPPED)}
