"""`python -m backend serve --http HOST:PORT`: the protocol for a remote backend.

The add-on uploads a job's input files with the job (base64, small images / audio / a
mesh), follows that job's events by long-polling, and downloads its outputs.

  GET  /hello                              -> hello message
  GET  /models                             -> models_status message (every role's status on the server)
  POST /jobs        {id, job, files: {name: base64}} -> {id, key}
  GET  /jobs/<id>/events?after=N&wait=S    -> {events: [...], next: M} (waits up to S s for news)
  GET  /jobs/<id>/files/<name>             -> an output (result.glb, preview.png, turntable.png, events.jsonl)
  POST /jobs/<id>/cancel                   -> {}
  POST /free                               -> {}
  GET  /status                             -> a farm's workers, queue and per-user counts (--ray)

POST /jobs may carry "priority": low | normal | high on a farm (serve --ray, backend/farm),
which serves users fairly: each token is a user (--users), round robin between them.

Trust (docs/security.md): with a token every request needs `Authorization: Bearer
<token>`; a server on a non-loopback address refuses to start without one. A job reads only
the files uploaded with it (every path field is confined to its upload folder, models are
the server's own, the preset a name). Job ids and file names are plain names (no dots
beyond one extension, no separators). Each job's events, files and cancel need the key
returned when it was submitted (header `X-Conjure-Job-Key`): clients sharing a token still
see only their own jobs, and their events and errors name paths inside the job's folder
only (`out/result.glb`; any other absolute path shortened to its last part). Event buffers
are bounded: a job's events are kept until it ends, then the oldest finished jobs of the
same user are forgotten beyond MAX_FINISHED. A job refused before it started has its
folder deleted (its events stay readable). Idle or half-sent requests are dropped after
IDLE_TIMEOUT seconds. `--tls-cert/--tls-key` serve HTTPS.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import ssl
import sys
import threading
from collections import OrderedDict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from .. import protocol
from ..atomic import is_disk_full, write_atomic
from .model_service import status_message
from .service import Emit, JobService, capabilities
from .signals import stop_on_signals

OUTPUT_FILES = ("result.glb", "preview.png", "turntable.png", "events.jsonl")
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.[A-Za-z0-9]{1,8}")
MAX_BODY = 256 << 20  # uploads: reference images, audio, a mesh
MAX_EVENTS = 2000  # kept per job (progress events are small; older ones are dropped)
MAX_FINISHED = 256  # finished jobs per user whose events are kept (running ones are always kept)
IDLE_TIMEOUT = 30.0  # seconds a connection may wait between bytes of a request
KEY_HEADER = "X-Conjure-Job-Key"
TERMINAL = ("done", "cancelled", "error")
REFUSED = ("invalid_job", "invalid_input")  # refused before work: the job folder is deleted


class BadRequest(Exception):
    def __init__(self, status: int, message: str, hint: str = "", code: str = "protocol") -> None:
        super().__init__(message)
        self.status, self.hint, self.code = status, hint, code


# An absolute path (POSIX, or a Windows drive's) that does not start inside a word, a URL or
# a relative path.
_ABSOLUTE = re.compile(r"(?<![\w.:/~-])(?:/|[A-Za-z]:\\)[^\s'\"`()\[\]{},;|<>]+")


def job_relative(value: Any, folder: str) -> Any:
    """A job event for a remote client: strings with the job's folder (`folder`, absolute)
    written relative to it, and any other absolute path (the server's install, its models,
    its other jobs) cut to its last part."""
    if isinstance(value, dict):
        return {k: job_relative(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [job_relative(v, folder) for v in value]
    if not isinstance(value, str):
        return value
    text = re.sub(re.escape(folder) + r"(?![\w.-])", ".", value.replace(folder + os.sep, ""))  # not jobs/<id>x
    return _ABSOLUTE.sub(lambda m: ".../" + re.split(r"[\\/]", m.group().rstrip("/\\"))[-1], text)


class _Log:
    """One job's events, numbered from 0 (the newest MAX_EVENTS kept)."""

    def __init__(self, user: str) -> None:
        self.events: deque = deque(maxlen=MAX_EVENTS)
        self.count, self.user, self.accepted, self.ended = 0, user, False, False


class JobEvents:
    """Each job's events (job-relative paths), with a condition for long-polls. A job's
    events are kept until it ends; when a user's finished jobs pass MAX_FINISHED, their
    oldest are forgotten. on_refused(job_id): called when a job ends refused before work."""

    def __init__(self, jobs_dir: Path, on_refused: Callable[[str], None] | None = None) -> None:
        self.jobs_dir, self.on_refused = Path(jobs_dir), on_refused
        self.jobs: OrderedDict[str, _Log] = OrderedDict()
        self.cond = threading.Condition()

    def open(self, job_id: str, user: str = "local") -> list[str]:
        """-> the ids of the user's finished jobs forgotten to make room."""
        with self.cond:
            self.jobs[job_id] = _Log(user)
            finished = [j for j, log in self.jobs.items() if log.user == user and log.ended]
            dropped = finished[:max(len(finished) - MAX_FINISHED, 0)]
            for j in dropped:
                del self.jobs[j]
            return dropped

    def __call__(self, event: dict) -> None:
        job_id = event.get("id", "")
        with self.cond:
            log = self.jobs.get(job_id)
            if log is None:  # server-wide events (freed) have no reader over HTTP
                return
            log.accepted |= event.get("type") == "accepted"
            refused = event.get("type") in TERMINAL and event.get("code") in REFUSED and not log.accepted
        if refused and self.on_refused is not None:  # gone before a reader can see the refusal
            self.on_refused(job_id)
        with self.cond:
            log.events.append({"v": protocol.PROTOCOL_VERSION, **job_relative(event, str(self.jobs_dir / job_id))})
            log.count += 1
            log.ended |= event.get("type") in TERMINAL
            self.cond.notify_all()

    def since(self, job_id: str, after: int, wait: float) -> tuple[list[dict], int]:
        """KeyError for a job whose events are not kept."""
        with self.cond:
            log = self.jobs[job_id]
            if log.count <= after:
                self.cond.wait(timeout=wait)
            log = self.jobs[job_id]
            first = log.count - len(log.events)  # number of the oldest event kept
            return list(log.events)[max(after - first, 0):], log.count


class _Server(ThreadingHTTPServer):
    """The HTTP server and what its requests share: the jobs folder, the job service, the
    events, the tokens (token -> user) and each job's key."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog: a burst of clients is queued, not reset
    jobs_dir: Path
    events: JobEvents
    service: Any
    tokens: dict[str, str]

    def __init__(self, address: tuple[str, int], jobs_dir: Path, tokens: dict[str, str],
                 service_factory: Callable[[Emit], Any]) -> None:
        super().__init__(address, Handler)
        self.jobs_dir, self.tokens = jobs_dir, tokens
        self.events = JobEvents(jobs_dir, self.remove_refused)
        self.service = service_factory(self.events)
        self.keys: dict[str, str] = {}  # job id -> its key
        self.keys_lock = threading.Lock()

    def remove_refused(self, job_id: str) -> None:
        shutil.rmtree(self.jobs_dir / job_id, ignore_errors=True)

    def key_of(self, job_id: str) -> str | None:
        with self.keys_lock:
            return self.keys.get(job_id)

    def new_key(self, job_id: str) -> str:
        """A key for a new job id; BadRequest 409 when the id is taken."""
        with self.keys_lock:
            if job_id in self.keys or (self.jobs_dir / job_id).exists():
                raise BadRequest(409, f"job id {job_id!r} is in use", "give each job a new id")
            self.keys[job_id] = secrets.token_urlsafe(24)
            return self.keys[job_id]

    def forget(self, job_ids: list[str]) -> None:
        with self.keys_lock:
            for job_id in job_ids:
                self.keys.pop(job_id, None)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_users(path: str) -> dict[str, str]:
    """A users file, JSON {"user name": "token", ...} -> token -> user name."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--users {path}: cannot read it as JSON ({exc})") from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) and len(v) >= 16
                                            for k, v in raw.items()):
        raise ValueError(f"--users {path}: expected {{\"user name\": \"token of 16+ characters\", ...}}")
    tokens = {v: k for k, v in raw.items()}
    if len(tokens) < len(raw):
        raise ValueError(f"--users {path}: two users share a token")
    return tokens


class Handler(BaseHTTPRequestHandler):
    """One request, against its server's shared state (_Server)."""

    server: _Server

    def setup(self) -> None:
        self.timeout = IDLE_TIMEOUT  # per read or write (StreamRequestHandler.setup); read per connection
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):  # here, under the timeout, not in accept()
            self.connection.do_handshake()

    def log_message(self, fmt: str, *args: object) -> None:  # requests go to stderr quietly
        pass

    def _reply(self, status: int, body: dict | bytes, kind: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, hint: str = "", code: str = "protocol") -> None:
        self._reply(status, {"v": protocol.PROTOCOL_VERSION, "type": "error", "code": code,
                             "message": message, "hint": hint, "traceback": ""})

    def _check_token(self) -> str:
        """-> the user the request's token belongs to ("local" on a server without tokens)."""
        if not self.server.tokens:
            return "local"
        given = self.headers.get("Authorization", "")
        if given.startswith("Bearer "):
            for known, user in self.server.tokens.items():
                if hmac.compare_digest(given[7:].strip().encode(), known.encode()):
                    return user
        raise BadRequest(401, "missing or wrong token", "set the remote token in the add-on preferences "
                         "(sent as 'Authorization: Bearer <token>')")

    def _job(self, job_id: str) -> str:
        """The job named in the path, if this request holds its key."""
        key = self.server.key_of(job_id) if JOB_ID.fullmatch(job_id) else None
        given = self.headers.get(KEY_HEADER, "")
        if key is None or not hmac.compare_digest(given.encode(), key.encode()):
            raise BadRequest(404, f"no job {job_id!r} for this client")
        return job_id

    def _body(self) -> dict:
        raw = self.headers.get("Content-Length", "0")
        if not raw.isdigit():
            raise BadRequest(400, f"Content-Length {raw!r} is not a byte count")
        length = int(raw)
        if length > MAX_BODY:
            raise BadRequest(413, f"request of {length} bytes is too large",
                             "reference files must stay under 256 MB together")
        try:
            body = protocol.loads(self.rfile.read(length) or b"{}")
        except (protocol.DuplicateKey, protocol.JSONLimit) as exc:
            raise BadRequest(400, f"body: {exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(400, f"body is not a JSON object: {type(exc).__name__}") from None
        if not isinstance(body, dict):
            raise BadRequest(400, f"body must be a JSON object, got {type(body).__name__}")
        bad = protocol.first_unusable({k: v for k, v in body.items() if k not in ("job", "files")})
        if bad:  # the job's own fields are named by its validation, as an invalid_job event
            raise BadRequest(400, f"body.{bad[0]}: {bad[1]}")
        return body

    def _handle(self, method: str) -> None:
        try:
            self.user = self._check_token()
            path, _, query = self.path.partition("?")
            route = getattr(self, f"_{method}")
            route(path, dict(p.split("=", 1) for p in query.split("&") if "=" in p))
        except BadRequest as exc:
            self.close_connection = True  # an unread body must not be parsed as the next request
            self._error(exc.status, str(exc), exc.hint, exc.code)
        except OSError:  # the client went quiet (IDLE_TIMEOUT) or away mid-request: nothing to answer
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 (answered; the server goes on)
            self.close_connection = True
            self._error(500, job_relative(f"the server failed on this request: {exc}", str(self.server.jobs_dir)),
                        "see the server's log", "internal")

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._handle("get")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("post")

    def _get(self, path: str, params: dict[str, str]) -> None:
        service = self.server.service
        if path == "/hello":
            return self._reply(200, {"v": protocol.PROTOCOL_VERSION, "type": "hello",
                                     "capabilities": capabilities()})
        if path == "/models":  # status only: downloads on the server machine are its admin's
            return self._reply(200, status_message())
        if path == "/status":
            if not service.shared_between_users:
                raise BadRequest(404, "this server runs one job at a time; it has no farm status",
                                 "a farm is started with serve --http ... --ray ADDRESS")
            return self._reply(200, service.status(self.user))
        if m := re.fullmatch(r"/jobs/([^/]+)/events", path):
            return self._reply(200, self._events(self._job(m.group(1)), params))
        if m := re.fullmatch(r"/jobs/([^/]+)/files/([^/]+)", path):
            return self._reply(200, self._file(self._job(m.group(1)), m.group(2)), "application/octet-stream")
        raise BadRequest(404, f"unknown path {path}")

    def _events(self, job_id: str, params: dict[str, str]) -> dict:
        """A long-poll: the job's events after `after`, waiting up to `wait` s for news."""
        try:
            after, wait = max(int(params.get("after", 0)), 0), float(params.get("wait", 0))
        except ValueError:
            raise BadRequest(400, "after and wait must be numbers") from None
        if not math.isfinite(wait):
            raise BadRequest(400, f"wait={wait}: a number of seconds (0 to 30)")
        try:
            batch, nxt = self.server.events.since(job_id, after, min(max(wait, 0.0), 30.0))
        except KeyError:
            raise BadRequest(404, f"the events of job {job_id!r} are no longer kept",
                             f"its folder's events.jsonl has them (GET /jobs/{job_id}/files/events.jsonl)") from None
        return {"events": batch, "next": nxt}

    def _file(self, job_id: str, name: str) -> bytes:
        """An output of the job; its event log as the client's events show it (job-relative paths)."""
        folder = self.server.jobs_dir / job_id
        file = folder / "out" / name
        if name not in OUTPUT_FILES or not file.is_file():
            raise BadRequest(404, f"no {name} for job {job_id}")
        data = file.read_bytes()
        if name == "events.jsonl":
            data = b"".join(json.dumps(job_relative(json.loads(line), str(folder))).encode() + b"\n"
                            for line in data.splitlines() if line.strip())
        return data

    def _post(self, path: str, params: dict[str, str]) -> None:
        body = self._body()
        if path == "/jobs":
            return self._reply(200, self._submit(body))
        if m := re.fullmatch(r"/jobs/([^/]+)/cancel", path):
            self.server.service.cancel(self._job(m.group(1)))
            return self._reply(200, {})
        if path == "/free":
            self.server.service.free()
            return self._reply(200, {})
        raise BadRequest(404, f"unknown path {path}")

    def _submit(self, body: dict) -> dict:
        job_id, job, files = body.get("id"), body.get("job"), body.get("files") or {}
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            raise BadRequest(400, "a job id is 1-64 letters, digits, _ and -, starting with a letter or digit")
        if not isinstance(job, dict):
            raise BadRequest(400, "job must be a JSON object")
        service = self.server.service
        priority = body.get("priority", "normal")
        if not isinstance(priority, str) or priority not in protocol.PRIORITIES:
            raise BadRequest(400, f"priority {priority!r} is not one of {', '.join(protocol.PRIORITIES)}")
        if priority != "normal" and not service.shared_between_users:
            raise BadRequest(400, "priorities need a farm (serve --ray): this server runs jobs in order")
        decoded = _decoded_files(files)
        key = self.server.new_key(job_id)
        upload = self._store_upload(job_id, decoded)
        self.server.forget(self.server.events.open(job_id, self.user))
        ticket = {"user": self.user, "priority": protocol.PRIORITIES[priority]} if service.shared_between_users else {}
        service.submit(job_id, job, str(upload), str(self.server.jobs_dir / job_id / "out"), confined=True, **ticket)
        return {"id": job_id, "key": key}

    def _store_upload(self, job_id: str, decoded: dict[str, bytes]) -> Path:
        """The uploaded files in the job's upload folder; on failure nothing half-written is
        kept and the id is free again."""
        upload = self.server.jobs_dir / job_id / "upload"
        try:
            upload.mkdir(parents=True)
            for name, data in decoded.items():
                write_atomic(upload / name, data)
        except OSError as exc:
            shutil.rmtree(self.server.jobs_dir / job_id, ignore_errors=True)
            self.server.forget([job_id])
            if is_disk_full(exc):
                raise BadRequest(507, "the server's disk is full: the upload was not kept",
                                 "free disk space on the server, then submit the job again", "disk_full") from None
            raise BadRequest(500, f"the upload could not be stored ({exc.strerror or type(exc).__name__})",
                             "see the server's log", "internal") from None
        return upload


def _decoded_files(files: Any) -> dict[str, bytes]:
    """A submission's files {name: base64} -> {name: bytes}, names checked."""
    if not isinstance(files, dict):
        raise BadRequest(400, "files must map file names to base64 strings")
    decoded = {}
    for name, data in files.items():
        if not isinstance(name, str) or not FILE_NAME.fullmatch(name):
            raise BadRequest(400, f"bad file name {name!r}: a name and one extension, letters, digits, _ -")
        try:
            decoded[name] = base64.b64decode(data, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise BadRequest(400, f"files.{name} is not base64") from None
    return decoded


def make_server(host: str, port: int, jobs_dir: Path, token: str | None,
                tls: tuple[str, str] | None = None, service_factory: Callable[[Emit], Any] = JobService,
                users: dict[str, str] | None = None) -> ThreadingHTTPServer:
    """service_factory: JobService (one machine) or a farm's front (backend/farm); users:
    token -> user name (several artists, each their own token); else `token` is everyone's."""
    tokens = dict(users or {}) or ({token: "default"} if token else {})
    server = _Server((host, port), Path(jobs_dir), tokens, service_factory)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return server


def serve_http(address: str, jobs_dir: str | None = None, token: str | None = None,
               tls_cert: str | None = None, tls_key: str | None = None,
               service_factory: Callable[[Emit], Any] = JobService, users_file: str | None = None) -> int:
    host, _, port = address.rpartition(":")
    host = host or "127.0.0.1"
    token = token or os.environ.get("CONJURE_TOKEN")
    if not port.isdigit():
        print(f"error: {address!r} is not HOST:PORT", file=sys.stderr)
        return 2
    try:
        users = load_users(users_file) if users_file else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if users and token:
        print("error: --users gives every user a token; leave --token (and CONJURE_TOKEN) out", file=sys.stderr)
        return 2
    token = token or (next(iter(users)) if users else None)  # "has a token" for the checks below
    if (tls_cert is None) != (tls_key is None):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if not token and not _is_loopback(host):
        print(f"error: serving on {host} needs a token (--token or CONJURE_TOKEN): anyone who can reach it "
              "could run jobs and read their results", file=sys.stderr)
        return 2
    if not token:
        print("warning: no token: any program on this machine can use the server", file=sys.stderr)
    if token and not tls_cert and not _is_loopback(host):
        print("warning: plain HTTP sends the token in clear; use --tls-cert/--tls-key", file=sys.stderr)
    root = Path(jobs_dir or Path.home() / ".cache" / "conjure" / "jobs")
    root.mkdir(parents=True, exist_ok=True)
    try:
        server = make_server(host, int(port), root, token, (tls_cert, tls_key) if tls_cert else None,
                             service_factory, users)
    except RuntimeError as exc:  # a farm that cannot start (no cluster, no workers) says why
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scheme = "https" if tls_cert else "http"
    print(f"conjure backend serving on {scheme}://{host}:{server.server_address[1]} (jobs in {root})", flush=True)
    # SIGTERM (systemd, kill, a script's background job) and Ctrl-C: no new requests, the
    # running job cancelled at its next checkpoint (its `cancelled` event written), then exit
    # 0. shutdown() waits for serve_forever, so it runs beside it.
    with stop_on_signals(lambda signum: threading.Thread(target=server.shutdown, daemon=True).start(),
                         "stopping: the running job is cancelled at its next checkpoint"):
        server.serve_forever()
        server.server_close()
        server.service.close(wait=True)
    return 0
