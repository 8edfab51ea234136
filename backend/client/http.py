"""A remote backend over HTTP(S): jobs and their files uploaded, events followed by long
polling, results fetched into the local job folder."""
from __future__ import annotations

import base64
import json
import ssl
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from .. import protocol
from ..job import Job, resolve_job
from .base import Backend, error_message


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
                        self._arrived(error_message("backend_died", str(exc), "check the remote URL and that the server "
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

    def submit(self, job: Job, base_dir: str | Path, out_dir: str | Path, job_id: str | None = None) -> str:
        """Resolves the job's files locally first (one missing is refused here, before any upload), then
        uploads in the background (the caller, Blender's main thread, does not wait); inputs
        go under generated names (the server takes plain names only). An upload the server
        refuses arrives as the job's error message."""
        job_id = job_id or uuid.uuid4().hex[:12]
        local = resolve_job(job, base_dir)
        inputs = []
        for i, (_, path) in enumerate(local.inputs()):
            suffix = "".join(c for c in Path(path).suffix.lower() if c.isalnum())[:8] or "bin"
            inputs.append((f"input{i:02d}.{suffix}", path))
        remote = local.with_inputs({field: name for (field, _), (name, _) in zip(local.inputs(), inputs)}).to_json()
        remote["models"] = job.models  # the server's own (a remote job may name no folder)
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
                self._arrived(error_message("protocol", f"the job could not be sent: {exc}",
                                     "check the remote URL, token and the server's log", job_id))

        threading.Thread(target=upload, name=f"conjure-upload-{job_id}", daemon=True).start()
        return job_id

    def cancel(self, job_id: str) -> None:
        self._request("POST", f"/jobs/{job_id}/cancel", {}, job_id=job_id)

    def status(self) -> dict:
        """A farm's workers, queue (this client's user sees its own job ids) and per-user
        counts; RuntimeError (HTTP 404) from a one-machine server."""
        return self._request("GET", "/status")

    def models(self, action: str, roles: list[str] | None = None, job: Job | None = None,
               accept_licences: bool = False) -> None:
        if action == "status":
            self._arrived(self._request("GET", "/models"))
            return
        self._arrived(error_message("download", "models are downloaded on the server machine",
                             "run `python -m backend models download --for-job JOB.json` there"))

    @property
    def alive(self) -> bool:
        return self._ok and self._reader.is_alive()

    def close(self) -> None:
        self._stop.set()
