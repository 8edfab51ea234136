"""A backend started as a local subprocess: `<python> -m backend serve --stdio`, one JSON
message a line each way, its stderr kept in a log whose tail explains a death."""
from __future__ import annotations

import os
import subprocess
import threading
import uuid
from pathlib import Path

from .. import protocol
from ..job import Job
from .base import Backend, error_message


class StdioBackend(Backend):
    def __init__(self, python: str, log_path: str | Path, cwd: str | Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        """Start `python -m backend serve --stdio` in cwd (the folder holding backend/);
        its stderr goes to log_path."""
        super().__init__()
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._write_lock = threading.Lock()
        try:
            self.proc = subprocess.Popen([python, "-m", "backend", "serve", "--stdio"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._log, cwd=cwd,
                                         env={**os.environ, **(env or {})})
        except OSError as exc:
            self._log.close()
            raise RuntimeError(f"could not start the backend with {python!r}: {exc}") from exc
        self._reader = threading.Thread(target=self._read, name="conjure-backend-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self.proc.stdout
        while True:
            line = stream.readline(protocol.MAX_LINE + 1)
            if not line:
                break
            if len(line) > protocol.MAX_LINE and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):
                    line = stream.readline(protocol.MAX_LINE)
                self._arrived(error_message("protocol", "the backend sent a line over the size limit; it was dropped",
                                     f"see {self.log_path}"))
                continue
            if not line.strip():
                continue
            try:
                self._arrived(protocol.decode(line, protocol.SERVER_TYPES))
            except protocol.ProtocolError as exc:
                self._arrived(error_message("protocol", f"unreadable output from the backend: {exc}",
                                     f"something in the backend printed to stdout; see {self.log_path}"))
        code = self.proc.wait()
        if self._closing:
            return
        tail = self._log_tail()
        hint = f"the job folder keeps its checkpoints: press Resume to go on from the last one. Backend log: {self.log_path}"
        for job_id in sorted(self.running) or [None]:
            self._arrived(error_message("backend_died", f"the backend exited with code {code}" + (f": {tail}" if tail else ""),
                                 hint, job_id))
        self.running.clear()

    _closing = False

    def _log_tail(self) -> str:
        """The cause in the backend's log: the last exception line of a traceback, else the
        last line that is not a progress bar."""
        try:
            text = self.log_path.read_text(errors="replace").replace("\r", "\n").splitlines()
        except OSError:
            return ""
        lines = [x.strip() for x in text if x.strip() and "%|" not in x]  # progress bars say nothing
        if "Traceback (most recent call last):" in lines:
            after = lines[len(lines) - 1 - lines[::-1].index("Traceback (most recent call last):"):]
            causes = [x for x in after if not x.startswith(("File ", "Traceback", "^", "~")) and ":" in x]
            if causes:
                return causes[-1]
        return lines[-1] if lines else ""

    def _send(self, message: dict) -> None:
        if not self.alive:
            raise RuntimeError(f"the backend is not running (log: {self.log_path})")
        with self._write_lock:
            try:
                self.proc.stdin.write(protocol.encode(message).encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise RuntimeError(f"the backend stopped listening ({exc}); log: {self.log_path}") from exc

    def submit(self, job: Job, base_dir: str | Path, out_dir: str | Path, job_id: str | None = None) -> str:
        job_id = job_id or uuid.uuid4().hex[:12]
        self.running.add(job_id)
        self._send({"type": "submit", "id": job_id, "job": job.to_json(), "base_dir": str(Path(base_dir).resolve()),
                    "out_dir": str(Path(out_dir).resolve())})
        return job_id

    def cancel(self, job_id: str) -> None:
        self._send({"type": "cancel", "id": job_id})

    def models(self, action: str, roles: list[str] | None = None, job: Job | None = None,
               accept_licences: bool = False) -> None:
        self._send({"type": "models", "action": action, "roles": list(roles or []),
                    "job": None if job is None else job.to_json(),
                    "accept_licences": accept_licences})

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout: float = 10.0) -> None:
        """Ask for shutdown, then terminate, then kill."""
        self._closing = True
        if self.alive:
            try:
                self._send({"type": "shutdown"})
                self.proc.stdin.close()
                self.proc.wait(timeout=timeout)
            except (RuntimeError, OSError, subprocess.TimeoutExpired):
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
        self._log.close()
