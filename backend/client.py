"""Client side of the protocol, used by the Blender add-on. Standard library only, no bpy:
it is unit-tested without Blender.

A client talks to one backend, a local subprocess (`StdioBackend`: `<python> -m backend
serve --stdio`) or a remote server (`HttpBackend`). A reader thread turns what arrives into
messages on a queue; the add-on drains it from a timer on Blender's main thread with
poll(), so Blender never waits on the backend. Anything unreadable becomes an error
message (code "protocol"); a backend that exits becomes one with code "backend_died", with
the tail of its log. The job folder is on disk and survives either way.
"""
from __future__ import annotations

import base64
import json
import os
import queue
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from . import protocol


def _error(code: str, message: str, hint: str = "", job_id: str | None = None) -> dict:
    msg = {"v": protocol.PROTOCOL_VERSION, "type": "error", "code": code, "message": message, "hint": hint,
           "traceback": ""}
    return msg if job_id is None else {**msg, "id": job_id}


class Backend:
    """What the add-on needs of a backend."""

    def __init__(self) -> None:
        self.messages: queue.Queue[dict] = queue.Queue()
        self.capabilities: dict | None = None
        self.running: set[str] = set()  # submitted, not yet finished
        self.death: dict | None = None  # the backend_died message, once the backend is gone

    def _arrived(self, msg: dict) -> None:
        if msg.get("type") == "hello":
            self.capabilities = msg.get("capabilities", {})
        if msg.get("code") == "backend_died":
            self.death = msg
        if msg.get("type") in ("done", "cancelled", "error"):
            self.running.discard(msg.get("id"))
        self.messages.put(msg)

    def poll(self) -> list[dict]:
        """Every message that has arrived, without waiting."""
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def wait_hello(self, timeout: float = 60.0) -> dict:
        """Block until the backend said hello (messages before it stay queued)."""
        deadline = time.monotonic() + timeout
        held: list[dict] = []
        try:
            while self.capabilities is None:
                if self.death is not None:
                    raise RuntimeError(f"{self.death['message']}\n{self.death.get('hint', '')}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the backend did not answer within {timeout:.0f} s")
                try:
                    msg = self.messages.get(timeout=min(left, 0.2))
                except queue.Empty:
                    continue
                held.append(msg)
        finally:
            for msg in held:
                self.messages.put(msg)
        return self.capabilities

    def submit(self, job: dict, base_dir: str | Path, out_dir: str | Path, job_id: str | None = None) -> str:
        raise NotImplementedError

    def cancel(self, job_id: str) -> None:
        raise NotImplementedError

    def free(self) -> None:
        raise NotImplementedError

    def models(self, action: str, roles: list[str] | None = None, job: dict | None = None,
               accept_licences: bool = False) -> None:
        """Model status, download or cancel (protocol.MODEL_ACTIONS); the answers arrive as
        messages (models, download, models_done, error)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def alive(self) -> bool:
        raise NotImplementedError


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
                self._arrived(_error("protocol", "the backend sent a line over the size limit; it was dropped",
                                     f"see {self.log_path}"))
                continue
            if not line.strip():
                continue
            try:
                self._arrived(protocol.decode(line, protocol.SERVER_TYPES))
            except protocol.ProtocolError as exc:
                self._arrived(_error("protocol", f"unreadable output from the backend: {exc}",
                                     f"something in the backend printed to stdout; see {self.log_path}"))
        code = self.proc.wait()
        if self._closing:
            return
        tail = self._log_tail()
        hint = f"the job folder keeps its checkpoints: press Resume to go on from the last one. Backend log: {self.log_path}"
        for job_id in sorted(self.running) or [None]:
            self._arrived(_error("backend_died", f"the backend exited with code {code}" + (f": {tail}" if tail else ""),
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

    def submit(self, job: dict, base_dir: str | Path, out_dir: str | Path, job_id: str | None = None) -> str:
        job_id = job_id or uuid.uuid4().hex[:12]
        self.running.add(job_id)
        self._send({"type": "submit", "id": job_id, "job": job, "base_dir": str(Path(base_dir).resolve()),
                    "out_dir": str(Path(out_dir).resolve())})
        return job_id

    def cancel(self, job_id: str) -> None:
        self._send({"type": "cancel", "id": job_id})

    def free(self) -> None:
        self._send({"type": "free"})

    def models(self, action: str, roles: list[str] | None = None, job: dict | None = None,
               accept_licences: bool = False) -> None:
        self._send({"type": "models", "action": action, "roles": list(roles or []), "job": job,
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


class HttpBackend(Backend):
    """A remote `serve --http` backend: inputs are uploaded, outputs downloaded into the
    local job folder, so the add-on sees the same files either way."""

    def __init__(self, url: str, token: str = "", poll_wait: float = 10.0, cafile: str | None = None,
                 priority: str = "normal") -> None:
        """cafile: a PEM bundle that signs the server's certificate (an https URL with a
        self-signed certificate); without it the system's trust store decides. priority:
        its jobs' place on a farm (protocol.PRIORITIES)."""
        super().__init__()
        if priority not in protocol.PRIORITIES:
            raise ValueError(f"priority {priority!r} is not one of {', '.join(protocol.PRIORITIES)}")
        self.url, self.token, self.poll_wait, self.priority = url.rstrip("/"), token, poll_wait, priority
        self._tls = ssl.create_default_context(cafile=cafile) if self.url.startswith("https") else None
        self.out_dirs: dict[str, Path] = {}
        self.keys: dict[str, str] = {}  # job id -> the key the server gave it
        self._after: dict[str, int] = {}
        self._stop = threading.Event()
        self._ok = True
        self._arrived(self._request("GET", "/hello"))
        self._reader = threading.Thread(target=self._follow, name="conjure-remote-reader", daemon=True)
        self._reader.start()

    def _request(self, method: str, path: str, body: dict | None = None, timeout: float = 30.0,
                 job_id: str | None = None) -> dict:
        raw = self._fetch(method, path, body, timeout, job_id)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RuntimeError(f"the server at {self.url} answered something that is not JSON") from exc

    def _fetch(self, method: str, path: str, body: dict | None = None, timeout: float = 30.0,
               job_id: str | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if job_id is not None:
            req.add_header("X-Conjure-Job-Key", self.keys.get(job_id, ""))
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._tls) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("message", "")
            except (json.JSONDecodeError, AttributeError):
                detail = ""
            raise RuntimeError(f"{self.url}{path}: HTTP {exc.code} {detail}".strip()) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise RuntimeError(f"cannot reach the backend at {self.url}: {exc}") from exc

    def _follow(self) -> None:
        """Long-poll each running job's events (the server scopes events to their job)."""
        while not self._stop.is_set():
            jobs = sorted(j for j in self.running if j in self.keys)
            if not jobs:
                self._stop.wait(0.1)
                continue
            wait = self.poll_wait if len(jobs) == 1 else 0.0
            for job_id in jobs:
                try:
                    reply = self._request("GET", f"/jobs/{job_id}/events?after={self._after.get(job_id, 0)}"
                                          f"&wait={wait}", timeout=wait + 30, job_id=job_id)
                except RuntimeError as exc:
                    self._ok = False
                    for running in sorted(self.running):
                        self._arrived(_error("backend_died", str(exc), "check the remote URL and that the server "
                                             "runs; the remote job folder keeps its checkpoints", running))
                    self.running.clear()
                    return
                self._after[job_id] = reply.get("next", 0)
                for msg in reply.get("events", []):
                    self._arrived(self._localise(msg) if msg.get("id") in self.out_dirs else msg)

    def _localise(self, msg: dict) -> dict:
        """Download the outputs an event names into the local job folder; rewrite its paths."""
        out = self.out_dirs[msg["id"]]
        for key in ("glb", "preview", "turntable"):
            if isinstance(msg.get(key), str):
                name = Path(msg[key]).name
                try:
                    (out / name).write_bytes(self._fetch("GET", f"/jobs/{msg['id']}/files/{name}", job_id=msg["id"]))
                    msg[key] = str(out / name)
                except RuntimeError:
                    msg.pop(key)
        return msg

    def submit(self, job: dict, base_dir: str | Path, out_dir: str | Path, job_id: str | None = None) -> str:
        """Validates locally first (a bad path is refused here, before any upload), then
        uploads in the background (the caller, Blender's main thread, does not wait); inputs
        go under generated names (the server takes plain names only). An upload the server
        refuses arrives as the job's error message."""
        job_id = job_id or uuid.uuid4().hex[:12]
        local = protocol.validate_job(job, base_dir)
        remote, inputs = json.loads(json.dumps(job)), []
        for i, (field, path) in enumerate(protocol.job_inputs(local)):
            suffix = "".join(c for c in Path(path).suffix.lower() if c.isalnum())[:8] or "bin"
            inputs.append((f"input{i:02d}.{suffix}", path))
            protocol.set_input(remote, field, inputs[-1][0])
        self.out_dirs[job_id] = Path(out_dir)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        self.running.add(job_id)

        def upload() -> None:
            try:
                files = {name: base64.b64encode(Path(path).read_bytes()).decode() for name, path in inputs}
                body = {"id": job_id, "job": remote, "files": files}
                if self.priority != "normal":  # a one-machine server refuses priorities
                    body["priority"] = self.priority
                reply = self._request("POST", "/jobs", body, timeout=300)
                self.keys[job_id] = reply["key"]
            except (RuntimeError, OSError, KeyError) as exc:
                self._arrived(_error("protocol", f"the job could not be sent: {exc}",
                                     "check the remote URL, token and the server's log", job_id))

        threading.Thread(target=upload, name=f"conjure-upload-{job_id}", daemon=True).start()
        return job_id

    def cancel(self, job_id: str) -> None:
        self._request("POST", f"/jobs/{job_id}/cancel", {}, job_id=job_id)

    def free(self) -> None:
        self._request("POST", "/free", {})

    def status(self) -> dict:
        """A farm's workers, queue (this client's user sees its own job ids) and per-user
        counts; RuntimeError (HTTP 404) from a one-machine server."""
        return self._request("GET", "/status")

    def models(self, action: str, roles: list[str] | None = None, job: dict | None = None,
               accept_licences: bool = False) -> None:
        if action == "status":
            self._arrived(self._request("GET", "/models"))
            return
        self._arrived(_error("download", "models are downloaded on the server machine",
                             "run `python -m backend models download --for-job JOB.json` there"))

    @property
    def alive(self) -> bool:
        return self._ok and self._reader.is_alive()

    def close(self) -> None:
        self._stop.set()

