"""The protocol's `models` operation: status of every role, a download (one at a time) and
its cancel.

A download runs `python -m backend models download --json` as a child process, so a
network stall or a crash in it never reaches the job server, and cancel is immediate
(the child is terminated; its `.part` files stay and the next download resumes them).
The explicit request is the user's consent to go online, so the child runs with
downloads on even when this server's jobs run with HF_HUB_OFFLINE=1. Events:
  models_status {roles: [role status...], free_bytes, cache}    (status, and after a download)
  download {role, file, bytes_done, bytes_total, rate_bps, eta_s} (progress)
  models_done {status: done | cancelled}
  error {code: download | licence, message, hint[, licences]}
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

from ..models.cached import complete, hub_cache, role_status
from ..models.download import free_bytes
from ..models.licences import accept_licences, licence_lines, unaccepted
from ..models.roles import registered, with_companions
from ..job import parse_job
from ..pipeline.guidance_terms import needed_roles
from ..protocol import JobError

Emit = Callable[[dict], None]
BACKEND_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the backend package


def status_message() -> dict:
    """The `models_status` event: every role's status, the hub cache folder and its free space."""
    cache = hub_cache()
    return {"type": "models_status", "roles": [role_status(r.name) for r in registered()], "cache": str(cache),
            "free_bytes": free_bytes(cache), "downloading": False}


class ModelService:
    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self._child: subprocess.Popen | None = None
        self._cancelled = False
        self._lock = threading.Lock()

    def handle(self, msg: dict) -> None:
        """A `models` message: action status, download (roles and/or a job) or cancel."""
        action = msg["action"]
        if action == "status":
            self.status()
        elif action == "cancel":
            self.cancel()
        else:
            self.download(msg.get("roles") or [], msg.get("job"), bool(msg.get("accept_licences")))

    def status(self) -> None:
        self.emit({**status_message(), "downloading": self._child is not None})

    def _error(self, code: str, message: str, hint: str, **extra: object) -> None:
        self.emit({"type": "error", "code": code, "message": message, "hint": hint, "traceback": "", **extra})

    def download(self, roles: list[str], job: dict | None, accept: bool) -> None:
        try:
            wanted = set(roles) | (needed_roles(parse_job(job)) if job else set())
            todo = [r for r in with_companions(wanted) if not complete(r)]
        except JobError as exc:
            return self._error("download", str(exc), f"fix the field {exc.field!r} in the job")
        except (KeyError, ValueError) as exc:
            return self._error("download", str(exc).strip("'\""), "name roles from the models status list")
        if not todo:
            self.emit({"type": "models_done", "status": "done"})
            return self.status()
        pending = unaccepted(todo)
        if pending and not accept:
            return self._error("licence", "the licences of " + ", ".join(pending) + " have not been accepted",
                               "show them and ask again with accept_licences", licences=licence_lines(pending))
        with self._lock:
            if self._child is not None:
                return self._error("download", "a download is already running", "wait for it or cancel it")
            if pending:
                accept_licences(pending)
            env = {**os.environ, "HF_HUB_OFFLINE": "0", "PYTHONUNBUFFERED": "1"}
            self._cancelled = False
            self._child = subprocess.Popen([sys.executable, "-m", "backend", "models", "download", "--json",
                                            "--accept-licences", *todo], cwd=BACKEND_ROOT, env=env,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._follow, args=(self._child,), name="conjure-download", daemon=True).start()

    def _follow(self, child: subprocess.Popen) -> None:
        for line in child.stdout:
            try:
                self.emit(json.loads(line))
            except json.JSONDecodeError:
                continue
        err = child.stderr.read()
        rc = child.wait()
        with self._lock:
            self._child = None
        if self._cancelled or rc == 130:
            self.emit({"type": "models_done", "status": "cancelled"})
        elif rc == 0:
            self.emit({"type": "models_done", "status": "done"})
        else:
            lines = err.strip().splitlines()
            message = next((ln[7:] for ln in lines if ln.startswith("error: ")), lines[-1] if lines else f"exit {rc}")
            hint = next((ln[6:] for ln in lines if ln.startswith("hint: ")), "run the download again: it resumes")
            self._error("download", message, hint)
        self.status()

    def cancel(self) -> None:
        with self._lock:
            child = self._child
            self._cancelled = child is not None
        if child is not None:
            child.terminate()

    def close(self) -> None:
        self.cancel()
