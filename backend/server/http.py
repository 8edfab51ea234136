"""`python -m backend serve --http HOST:PORT`: the protocol for a remote backend.

The add-on uploads a job's input files with the job (base64, small images / audio / a
mesh), follows events by long-polling, and downloads the outputs. Every request needs
`Authorization: Bearer <token>` when the server has a token (--token or CONJURE_TOKEN).

  GET  /hello                     -> hello message
  POST /jobs                      {id, job, files: {name: base64}} -> queued
  POST /jobs/<id>/cancel          -> {}
  GET  /events?after=N&wait=S     -> {events: [...], next: M} (waits up to S s for news)
  GET  /jobs/<id>/files/<name>    -> an output file (result.glb, preview.png, turntable.png, events.jsonl)
  POST /free                      -> freed
"""
from __future__ import annotations

import base64
import hmac
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .. import protocol
from .service import JobService, capabilities

OUTPUT_FILES = ("result.glb", "preview.png", "turntable.png", "events.jsonl")
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_BODY = 256 << 20  # uploads: reference images, audio, a mesh


class EventBuffer:
    """All events since start, numbered, with a condition for long-polls."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.cond = threading.Condition()

    def __call__(self, event: dict) -> None:
        with self.cond:
            self.events.append({"v": protocol.PROTOCOL_VERSION, **event})
            self.cond.notify_all()

    def since(self, after: int, wait: float) -> tuple[list[dict], int]:
        with self.cond:
            if len(self.events) <= after:
                self.cond.wait(timeout=wait)
            return self.events[after:], len(self.events)


def make_server(host: str, port: int, jobs_dir: Path, token: str | None) -> ThreadingHTTPServer:
    events = EventBuffer()
    service = JobService(events)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:  # requests go to stderr quietly
            pass

        def _reply(self, status: int, body: dict | bytes, kind: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, hint: str = "") -> None:
            self._reply(status, {"v": protocol.PROTOCOL_VERSION, "type": "error", "code": "protocol",
                                 "message": message, "hint": hint, "traceback": ""})

        def _authorised(self) -> bool:
            if not token:
                return True
            given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if hmac.compare_digest(given.encode(), token.encode()):
                return True
            self._error(401, "missing or wrong token", "set the remote token in the add-on preferences")
            return False

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if not self._authorised():
                return
            path, _, query = self.path.partition("?")
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            if path == "/hello":
                self._reply(200, {"v": protocol.PROTOCOL_VERSION, "type": "hello", "capabilities": capabilities()})
            elif path == "/events":
                try:
                    after, wait = int(params.get("after", 0)), min(float(params.get("wait", 0)), 30.0)
                except ValueError:
                    return self._error(400, "after and wait must be numbers")
                batch, nxt = events.since(after, wait)
                self._reply(200, {"events": batch, "next": nxt})
            elif m := re.match(r"^/jobs/([^/]+)/files/([^/]+)$", path):
                job_id, name = m.groups()
                file = jobs_dir / job_id / "out" / name
                if not _ID.match(job_id) or name not in OUTPUT_FILES or not file.is_file():
                    return self._error(404, f"no {name} for job {job_id}")
                self._reply(200, file.read_bytes(), "application/octet-stream")
            else:
                self._error(404, f"unknown path {path}")

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorised():
                return
            length = int(self.headers.get("Content-Length", 0))
            if length > MAX_BODY:
                return self._error(413, f"request of {length} bytes is too large",
                                   "reference files must stay under 256 MB together")
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError as exc:
                return self._error(400, f"body is not JSON: {exc.msg}")
            if self.path == "/jobs":
                job_id = body.get("id")
                if not isinstance(job_id, str) or not _ID.match(job_id) or not isinstance(body.get("job"), dict):
                    return self._error(400, "a job needs an id (letters, digits, _ . -) and a job object")
                upload = jobs_dir / job_id / "upload"
                upload.mkdir(parents=True, exist_ok=True)
                for name, data in (body.get("files") or {}).items():
                    if not _ID.match(name):
                        return self._error(400, f"bad file name {name!r}")
                    (upload / name).write_bytes(base64.b64decode(data))
                service.submit(job_id, body["job"], str(upload), str(jobs_dir / job_id / "out"))
                self._reply(200, {})
            elif m := re.match(r"^/jobs/([^/]+)/cancel$", self.path):
                service.cancel(m.group(1))
                self._reply(200, {})
            elif self.path == "/free":
                service.free()
                self._reply(200, {})
            else:
                self._error(404, f"unknown path {self.path}")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.service = service  # type: ignore[attr-defined]
    return server


def serve_http(address: str, jobs_dir: str | None = None, token: str | None = None) -> int:
    host, _, port = address.rpartition(":")
    root = Path(jobs_dir or Path.home() / ".cache" / "conjure" / "jobs")
    root.mkdir(parents=True, exist_ok=True)
    server = make_server(host or "127.0.0.1", int(port), root, token or os.environ.get("CONJURE_TOKEN"))
    print(f"conjure backend serving on http://{host or '127.0.0.1'}:{server.server_address[1]} (jobs in {root})",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.service.close(wait=False)  # type: ignore[attr-defined]
    return 0
