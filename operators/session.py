"""The add-on's one backend connection and its running job.

Blender's main thread owns all bpy data: the backend client's reader thread only queues
messages, and pump() (called from a modal timer, or a wait loop when headless) applies
them to the window manager's ConjureState, imports results and reports errors. A backend
that dies becomes an error in that state; the next job starts a new backend.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import bpy

from ..backend.client import Backend, HttpBackend, StdioBackend
from ..backend.job import Job
from ..preferences import prefs, venv_python

ADDON_ROOT = Path(__file__).resolve().parents[1]  # holds backend/


@dataclass
class RunningJob:
    """A submitted job as the session follows it."""

    id: str
    job: Job
    job_dir: Path
    target: str = ""  # stylize / edit: the object worked on
    on_result: Callable[[dict], None] | None = None
    messages: list[dict] = field(default_factory=list)


class Session:
    def __init__(self) -> None:
        self.backend: Backend | None = None
        self.job: RunningJob | None = None
        self.last: RunningJob | None = None  # the last job that ended unfinished (Resume)

    # -- backend --------------------------------------------------------------------------
    def _python(self) -> str:
        p = prefs().python.strip()
        if p:
            return bpy.path.abspath(p)
        python = venv_python()
        if not python.exists():
            raise RuntimeError("the backend is not installed: press Install backend in the add-on preferences, "
                               "or set Backend Python to an interpreter that has it")
        return str(python)

    def ensure_backend(self) -> Backend:
        if self.backend is not None and self.backend.alive:
            return self.backend
        self.close_backend()
        p = prefs()
        if p.remote_url.strip():
            url = p.remote_url.strip()
            host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
            if not bpy.app.online_access and host not in ("127.0.0.1", "localhost", "::1"):
                raise RuntimeError("online access is off (Preferences > System > Network): a remote backend on "
                                   "another machine needs it")
            self.backend = HttpBackend(url, p.remote_token, priority=p.remote_priority.lower())
            return self.backend
        env = {"PYTHONUNBUFFERED": "1"}
        if p.hf_home:  # the model folder: the hub cache and ImageBind's checkpoint
            env["HF_HOME"] = env["CONJURE_CACHE"] = bpy.path.abspath(p.hf_home)
        if not (p.allow_downloads and bpy.app.online_access):
            env["HF_HUB_OFFLINE"] = "1"
        # Kept in the extension's user folder (Blender's temp folder is deleted at exit).
        log = Path(bpy.utils.extension_path_user(__package__.rsplit(".", 1)[0], path="logs", create=True)) / "backend.log"
        # No waiting for its hello (imports take up to minutes): a job submitted now waits in
        # the pipe, and a backend that dies while starting is reported by the reader thread.
        self.backend = StdioBackend(self._python(), log, cwd=ADDON_ROOT, env=env)
        return self.backend

    def close_backend(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    # -- jobs -----------------------------------------------------------------------------
    def submit(self, job: Job, job_dir: Path, target: str = "",
               on_result: Callable[[dict], None] | None = None) -> RunningJob:
        """Run a job in job_dir (a folder with checkpoints resumes from them)."""
        if self.job is not None:
            raise RuntimeError("a job is already running: cancel it or wait for it")
        state = bpy.context.window_manager.conjure
        backend = self.ensure_backend()
        job_id = backend.submit(job, job_dir, job_dir / "out")
        self.job = RunningJob(job_id, job, job_dir, target, on_result)
        self.last = None
        state.running, state.status, state.error, state.hint, state.error_code = True, "queued", "", "", ""
        state.phase, state.step, state.total, state.progress, state.eta_s = "", 0, 0, 0.0, 0.0
        state.queue_position, state.farm = -1, ""
        state.job_dir, state.preview = str(job_dir), ""
        return self.job

    def cancel(self) -> bool:
        if self.job is None or self.backend is None:
            return False
        if self.backend.alive:
            self.backend.cancel(self.job.id)
        return True

    def pump(self) -> bool:
        """Apply what arrived; -> True while a job is still running."""
        if self.backend is None:
            return False
        for msg in self.backend.poll():
            self._apply(msg)
        return self.job is not None

    def wait_models(self, timeout: float = 3600.0) -> bool:
        """Headless: pump until no model request is pending. -> False on timeout."""
        deadline = time.monotonic() + timeout
        m = bpy.context.window_manager.conjure.models
        while time.monotonic() < deadline:
            self.pump()
            if m.status not in MODELS_PENDING:
                return True
            time.sleep(0.05)
        return False

    def wait(self, until: str = "end", timeout: float = 3600.0) -> bool:
        """Headless: pump until the job ends (or, with until="progress", its first progress).
        -> False on timeout."""
        deadline = time.monotonic() + timeout
        state = bpy.context.window_manager.conjure
        while time.monotonic() < deadline:
            running = self.pump()
            if not running or (until == "progress" and state.step > 0):
                return True
            time.sleep(0.05)
        return False

    def models(self, action: str, **kw: object) -> None:
        """Ask the backend about models (protocol `models`); answers land in state.models."""
        self.ensure_backend().models(action, **kw)
        m = bpy.context.window_manager.conjure.models
        m.status = {"download": "asking", "status": "refreshing"}.get(action, m.status)
        if not bpy.app.timers.is_registered(_pump_when_idle):
            bpy.app.timers.register(_pump_when_idle, first_interval=0.2)

    def _apply_models(self, msg: dict) -> None:
        m = bpy.context.window_manager.conjure.models
        kind = msg["type"]
        if kind == "models_status":
            m.roles.clear()
            for row in msg["roles"]:
                item = m.roles.add()
                item.role, item.present, item.where = row["role"], row["present"], row["where"]
                item.size_gb, item.licence = row.get("size_bytes", 0) / 1e9, row.get("licence", "")
            m.cache, m.free_gb, m.downloading = msg["cache"], msg["free_bytes"] / 1e9, msg["downloading"]
            if m.status in ("unknown", "refreshing"):
                m.status = "ready"
        elif kind == "download":
            m.status, m.downloading, m.file = "downloading", True, f"{msg['role']}: {msg['file']}"
            m.done_gb, m.total_gb = msg["bytes_done"] / 1e9, msg["bytes_total"] / 1e9
            m.progress = msg["bytes_done"] / max(msg["bytes_total"], 1)
            m.rate_mbps, m.eta_s = msg["rate_bps"] / 1e6, msg["eta_s"] or 0.0
        elif kind == "models_done":
            m.status, m.downloading, m.error, m.hint, m.licences = msg["status"], False, "", "", ""
        else:  # error: download or licence
            m.status, m.downloading, m.error, m.hint = "error", False, msg["message"], msg.get("hint", "")
            m.licences = "\n".join(msg.get("licences", []))

    def _apply(self, msg: dict) -> None:
        if msg["type"] in MODEL_MESSAGES or msg.get("code") in ("download", "licence"):
            self._apply_models(msg)
            return
        if msg.get("code") == "backend_died" and bpy.context.window_manager.conjure.models.status in MODELS_PENDING:
            self._apply_models(msg)  # the model request dies with it; a job it ran ends below
        state = bpy.context.window_manager.conjure
        job = self.job
        if job is None or msg.get("id") not in (None, job.id):
            return
        job.messages.append(msg)
        kind = msg["type"]
        if kind == "queued":
            state.status, state.queue_position = "queued", int(msg.get("position", 0))
            farm = msg.get("farm")
            if isinstance(farm, dict):
                state.farm = f"farm: {farm.get('busy', 0)}/{farm.get('workers', 0)} GPUs busy, " \
                             f"{farm.get('queued', 0)} jobs waiting"
        elif kind == "progress":
            state.status, state.phase, state.queue_position = "running", msg["phase"], -1
            state.step, state.total = msg["step"], msg["total"]
            state.progress = msg["step"] / max(msg["total"], 1)
            state.eta_s = msg.get("eta_s", 0.0)
            if msg.get("preview"):
                state.preview = msg["preview"]
                _show_preview(msg["preview"])
        elif kind == "log":
            print(f"[conjure] {msg.get('message', '')}")
        elif kind == "result":
            state.status = "importing"
            if job.on_result is not None:
                try:
                    job.on_result(msg)
                except Exception as exc:  # noqa: BLE001 (an import problem must not lose the job)
                    self._end("error", f"the result could not be imported: {exc}", f"the files are in {job.job_dir}")
                    return
        elif kind == "done":
            self._end("done")
        elif kind == "cancelled":
            self._end("cancelled", "", msg.get("message", ""))
        elif kind == "error":
            if msg.get("id") is None and msg.get("code") == "protocol":
                print(f"[conjure] {msg['message']}", file=sys.stderr)
                return
            self._end("error", msg.get("message", "error"), msg.get("hint", ""), msg.get("code", ""))

    def reset(self) -> None:
        """A new .blend was loaded: the running job (if any) is cancelled, which checkpoints
        it, and forgotten here; Resume can take it up again from its folder."""
        if self.job is not None:
            if self.backend is not None and self.backend.alive:
                self.backend.cancel(self.job.id)
            self.last = self.job
        self.job = None

    def _end(self, status: str, error: str = "", hint: str = "", code: str = "") -> None:
        state = bpy.context.window_manager.conjure
        state.error_code = code
        if status in ("error", "cancelled") and self.job is not None:
            self.last = self.job  # unfinished: Resume re-submits it in the same folder
        state.running, state.status = False, status
        state.error, state.hint = error.splitlines()[0][:500] if error else "", hint
        if error:
            print(f"[conjure] {status}: {error}\n{hint}", file=sys.stderr)
        self.job = None


def _show_preview(path: str) -> None:
    """Load (or reload) the preview PNG as the image 'Conjure Preview'."""
    if not os.path.isfile(path):
        return
    img = bpy.data.images.get("Conjure Preview")
    if img is None:
        img = bpy.data.images.load(path)
        img.name = "Conjure Preview"
    else:
        img.filepath = path
        img.reload()
    img.preview_ensure()


SESSION = Session()
MODEL_MESSAGES = ("models_status", "download", "models_done")
MODELS_PENDING = ("asking", "downloading", "refreshing")  # a model request waiting for its answer


def _pump_when_idle() -> float | None:
    """A timer while a model request is pending and no job's modal timer pumps."""
    if SESSION.backend is None:
        return None
    if SESSION.job is None:
        SESSION.pump()
    m = bpy.context.window_manager.conjure.models
    return 0.25 if m.status in MODELS_PENDING else None


@bpy.app.handlers.persistent
def _on_load(*_args: object) -> None:
    SESSION.reset()
    state = bpy.context.window_manager.conjure
    state.running, state.status = False, "idle"


def register() -> None:
    bpy.app.handlers.load_post.append(_on_load)


def unregister() -> None:
    if _on_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load)


def shutdown() -> None:
    SESSION.close_backend()
    SESSION.job = None
