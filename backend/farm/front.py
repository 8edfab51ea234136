"""Farm: the HTTP server's job service when it fronts a Ray cluster (`serve --http --ray`).

It has JobService's interface (submit, cancel, free, close; job events go to `emit` with the
job's id), so the protocol and the add-on are unchanged, and adds fairness between users,
priorities and `status()`. The pool holds one long-lived worker actor per GPU (a custom
resource stands in on CPU-only clusters); a dispatcher thread hands the next job from the
FairQueue to an idle worker; one thread per running job reads the worker's stream (events
and the job folder's changes, worker.py) into the front's job folder. When the worker's
process or node dies, the job goes back to the head of its user's line and the next worker
resumes it from the checkpoint the front holds; the dead worker is replaced (its
replacement waits for resources if its node is gone).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

from .. import protocol
from ..job import read_job
from ..server.jobs import EventLog, error_event
from .cluster import FarmError, FarmJob, Slot, connect, death_errors, job_files
from .scheduler import FairQueue
from .worker import FarmWorker, write_files

Emit = Callable[[dict], None]
TERMINAL = ("done", "cancelled", "error")


class Farm:
    shared_between_users = True

    def __init__(self, emit: Emit, address: str | None = "auto", workers: int | None = None, resource: str = "GPU",
                 max_running_per_user: int = 1, shared: bool = False, max_attempts: int = 3) -> None:
        """address: "auto", "ray://..." or HOST:PORT of the head (None: a Ray already
        initialised in this process). resource: "GPU" (one per worker) or a custom
        resource name. shared: job folders lie where every node mounts them (same path)."""
        import ray

        self.emit, self.shared, self.max_attempts = emit, shared, max_attempts
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            connect(address)
        have = int(ray.cluster_resources().get(resource, 0))
        workers = have if workers is None else workers
        if workers < 1:
            self._shutdown_ray()
            raise FarmError(f"the cluster has no {resource!r} to run workers on: start GPU nodes with "
                            "`ray start --address HEAD:6379` (docs/farm.md)")
        need = {"num_gpus": 1} if resource == "GPU" else {"num_gpus": 0, "resources": {resource: 1}}
        # num_cpus=0: a worker's CPU threads are its GPU job's; max_concurrency: cancel, info
        # and free are answered while a job runs.
        self._actor_cls = ray.remote(FarmWorker).options(num_cpus=0, max_concurrency=4, **need)
        self._queue = FairQueue(max_running_per_user)
        self._jobs: dict[str, FarmJob] = {}
        self._running: dict[str, int] = {}
        self._slots = [Slot(i) for i in range(workers)]
        self._cond = threading.Condition()
        self._closed, self._dirty = False, False
        self._announced: dict[str, int] = {}
        self._dispatches = 0
        for slot in self._slots:
            self._start_worker(slot)
        for target in (self._dispatch_loop, self._announce_loop):
            threading.Thread(target=target, name=f"farm{target.__name__}", daemon=True).start()

    # -- the service interface (server.service.JobService's) ---------------------------------
    def submit(self, job_id: str, job: dict, base_dir: str, out_dir: str, confined: bool = False,
               user: str = "local", priority: int = 0) -> None:
        """Queue a Conjure job (base_dir: its uploaded files, out_dir: its folder here). It is
        read here to refuse an invalid one at once, and again by the worker, against the
        folder on its own node (farm/kinds.run_conjure)."""
        try:
            read_job(job, base_dir, confined)
        except protocol.JobError as exc:
            self.emit({**error_event(exc, "invalid_job", f"fix the field {exc.field!r} in the job"), "id": job_id})
            return
        upload, out = Path(base_dir), Path(out_dir)
        task: dict = {"kind": "conjure", "job": job}
        if self.shared:  # the worker runs in place: upload/ and out/ side by side
            if upload.parent != out.parent:
                raise ValueError("with a shared folder, a job's upload and out folders are siblings")
            task["folder"] = str(out.parent)
        else:
            task["out"] = str(out)
        out.mkdir(parents=True, exist_ok=True)
        log = None if self.shared else EventLog(out / "events.jsonl", self._forwarder(job_id))
        self.submit_task(job_id, task, user, priority, upload=upload, out=out, log=log)

    def submit_task(self, job_id: str, task: dict, user: str = "local", priority: int = 0,
                    upload: Path | None = None, out: Path | None = None, log: Emit | None = None) -> None:
        """Queue any registered kind (kinds.py); submit() is this for Conjure jobs."""
        with self._cond:
            if job_id in self._jobs and self._jobs[job_id].state in ("queued", "running"):
                busy = True
            else:
                busy = False
                job = self._jobs[job_id] = FarmJob(job_id, user, priority, task, upload, out, log)
                job.seq = self._queue.push(job_id, user, priority)
                self._mark_dirty()
        if busy:
            self.emit({"type": "error", "id": job_id, "code": "busy", "message": f"job id {job_id!r} is in use",
                       "hint": "give each job a new id", "traceback": ""})

    def cancel(self, job_id: str) -> bool:
        """-> whether the job was queued (dropped now) or running (stops within a step)."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.state not in ("queued", "running"):
                return False
            job.cancel_requested = True
            was_queued = self._queue.remove(job_id)
            if was_queued:
                job.state, job.ended = "cancelled", time.time()
                self._mark_dirty()
            actor = None if was_queued else self._slots[job.worker].actor
        if actor is None:
            self._job_event(job, {"type": "cancelled", "message": "cancelled while queued"})
        else:
            actor.cancel.remote(job_id)
        return True

    def free(self) -> None:
        """Every worker drops its cached models (busy ones after their job's step)."""
        import ray

        actors = [s.actor for s in self._slots if s.state in ("idle", "busy")]
        ray.get([a.free.remote() for a in actors], timeout=60)
        self.emit({"type": "freed"})

    def close(self, wait: bool = True) -> None:
        """Cancel everything, stop the workers (and this process's Ray connection)."""
        import ray

        with self._cond:
            self._closed = True
            self._cond.notify_all()
            actors = [s.actor for s in self._slots if s.actor is not None]
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 (already gone)
                pass
        self._shutdown_ray()

    # -- what the front knows -------------------------------------------------------------
    def status(self, user: str | None = None) -> dict:
        """Workers, the queue in dispatch order and per-user counts. For a user, other
        users' job ids are left out (names and counts stay: it is one studio)."""
        with self._cond:
            order = self._queue.order()
            visible = lambda j: j.id if user is None or j.user == user else None  # noqa: E731
            workers = [{"worker": s.index, "state": s.state, **s.info,
                        "job": visible(self._jobs[s.job]) if s.job else None} for s in self._slots]
            queue = [{"position": i, "id": visible(self._jobs[j]), "user": self._jobs[j].user,
                      "priority": self._jobs[j].priority} for i, j in enumerate(order)]
            users: dict[str, dict] = {}
            for u, n in self._running.items():
                if n:
                    users.setdefault(u, {"running": 0, "queued": 0})["running"] = n
            for u, n in self._queue.waiting().items():
                users.setdefault(u, {"running": 0, "queued": 0})["queued"] = n
        return {"workers": workers, "queue": queue, "users": users,
                "max_running_per_user": self._queue.max_running_per_user}

    def wait_ready(self, timeout: float) -> bool:
        """-> whether every worker is up (started and answering) within timeout seconds."""
        end = time.monotonic() + timeout
        with self._cond:
            while any(s.state == "starting" for s in self._slots):
                if not self._cond.wait(timeout=max(end - time.monotonic(), 0)) and time.monotonic() >= end:
                    return False
        return True

    def jobs(self) -> dict[str, FarmJob]:
        with self._cond:
            return dict(self._jobs)

    def worker_history(self) -> list[list[str]]:
        """Per worker now alive: every job id it started (replaced workers start empty)."""
        import ray

        return ray.get([s.actor.jobs_run.remote() for s in self._slots if s.state != "starting"], timeout=60)

    # -- inside ---------------------------------------------------------------------------
    def _shutdown_ray(self) -> None:
        import ray

        if self._owns_ray and ray.is_initialized():
            ray.shutdown()

    def _forwarder(self, job_id: str) -> Emit:
        return lambda event: self.emit({**event, "id": job_id})

    def _job_event(self, job: FarmJob, event: dict) -> None:
        (job.log or self._forwarder(job.id))(event)

    def _mark_dirty(self) -> None:
        """Caller holds the lock: queue positions changed (announced by _announce_loop)."""
        self._dirty = True
        self._cond.notify_all()

    def _start_worker(self, slot: Slot) -> None:
        slot.actor, slot.state, slot.info = self._actor_cls.remote(), "starting", {}
        threading.Thread(target=self._await_worker, args=(slot, slot.actor), daemon=True).start()

    def _await_worker(self, slot: Slot, actor: Any) -> None:
        """Until the new actor answers (it waits for resources when its node is gone)."""
        import ray

        while True:
            try:
                info = ray.get(actor.info.remote())
                break
            except death_errors():
                if self._closed:
                    return
                time.sleep(1.0)
                with self._cond:
                    if slot.actor is not actor:
                        return
                    actor = slot.actor = self._actor_cls.remote()
            except Exception:  # noqa: BLE001 (Ray shut down: the farm is closing)
                return
        with self._cond:
            if slot.actor is actor:
                slot.info, slot.state = info, "idle"
                self._cond.notify_all()

    def _dispatch_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    slot = next((s for s in self._slots if s.state == "idle"), None)
                    job_id = self._queue.pick(self._running) if slot is not None else None
                    if job_id is not None:
                        break
                    self._cond.wait()
                job = self._jobs[job_id]
                slot.state, slot.job = "busy", job_id
                job.state, job.worker, job.dispatched = "running", slot.index, time.time()
                job.attempts += 1
                job.dispatch_rank, self._dispatches = self._dispatches, self._dispatches + 1
                self._running[job.user] = self._running.get(job.user, 0) + 1
                self._mark_dirty()
            threading.Thread(target=self._drive, args=(slot, job), name=f"farm-{job_id}", daemon=True).start()

    def _drive(self, slot: Slot, job: FarmJob) -> None:
        """Run one dispatch of a job on a worker, to its end or the worker's death."""
        import ray

        info = slot.info
        self._job_event(job, {"type": "log", "message": f"running on worker {slot.index} ({info.get('host')}, "
                                                        f"{info.get('device')}, attempt {job.attempts})"})
        ended, died, last = None, None, None
        try:
            stream = slot.actor.run.options(num_returns="streaming").remote(job.id, job.task,
                                                                            ray.put({} if self.shared else job_files(job)))
            if job.cancel_requested:
                slot.actor.cancel.remote(job.id)
            for ref in stream:
                msg = ray.get(ref)
                if "files" in msg:
                    write_files(job.out, msg["files"], msg["removed"])
                    continue
                event = msg["event"]
                if event.get("type") == "progress":
                    last = f"{event['phase']} step {event['step']}/{event['total']}"
                if event.get("type") in TERMINAL:
                    ended = event["type"]
                self._job_event(job, event)
            if ended is None:
                ended = "error"
                self._job_event(job, {"type": "error", "code": "internal", "message": "the worker ended the job "
                                      "without a result", "hint": "submit it again", "traceback": ""})
        except death_errors() as exc:
            died = exc
        except Exception as exc:  # noqa: BLE001 (the front outlives any job)
            if self._closed:
                return
            ended = "error"
            self._job_event(job, error_event(exc, "internal", "the front's job folder keeps the last checkpoint: "
                                                              "submit the job again"))
        if self._closed:
            return
        requeued = False
        with self._cond:
            self._running[job.user] -= 1
            slot.job = None
            if died is None:
                slot.state = "idle"
            else:
                self._start_worker(slot)
                if not job.cancel_requested and job.attempts < self.max_attempts:
                    job.state, job.worker, requeued = "queued", None, True
                    self._queue.push(job.id, job.user, job.priority, seq=job.seq)
            if not requeued:
                job.state = ended or ("cancelled" if job.cancel_requested else "error")
                job.ended = time.time()
            self._mark_dirty()
        if died is None:
            return
        where = f"worker {slot.index} ({info.get('host')}) died" + (f" at {last}" if last else "")
        if requeued:
            self._job_event(job, {"type": "log", "message": f"{where}: requeued, it resumes on another worker "
                                                            "from its last checkpoint"})
        elif job.cancel_requested:
            self._job_event(job, {"type": "cancelled", "message": f"{where}; the job was being cancelled"})
        else:
            self._job_event(job, {"type": "error", "code": "internal", "traceback": "",
                                  "message": f"{where}: its workers died {job.attempts} times running this job",
                                  "hint": "the job folder keeps the last checkpoint; check the workers' logs"})

    def _announce_loop(self) -> None:
        """Queue positions (and the farm's load) to every waiting job whose place changed,
        at most every 0.2 s: each dispatch moves everyone behind it."""
        while True:
            with self._cond:
                while not (self._dirty or self._closed):
                    self._cond.wait()
                if self._closed:
                    return
                self._dirty = False
                order = self._queue.order()
                farm = {"workers": len(self._slots), "busy": sum(s.state == "busy" for s in self._slots),
                        "queued": len(order)}
                # Under the lock: a job is never told its place after it was dispatched.
                for i, j in enumerate(order):
                    if self._announced.get(j) != i:
                        self._job_event(self._jobs[j], {"type": "queued", "position": i, "farm": farm})
                self._announced = {j: i for i, j in enumerate(order)}
            time.sleep(0.2)
