"""`python -m backend serve --stdio`: the protocol over stdin/stdout, one JSON line each way.

stdout carries protocol lines only: at start-up the process's file descriptor 1 is
pointed at stderr, so prints and progress bars of libraries cannot corrupt the stream;
the protocol writes to a private duplicate of the original stdout.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import IO, Callable

from .. import protocol
from .jobs import error_event
from .model_service import ModelService
from .service import JobService, capabilities
from .signals import stop_on_signals


def _protocol_stream() -> IO[str]:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return out


def _watch_parent(service: JobService, models: ModelService, gone: threading.Event, every: float = 0.5) -> None:
    """When the parent process dies (Blender killed), stop a download, cancel the jobs
    (each checkpoints at its next step) and exit."""
    parent = os.getppid()
    while not gone.wait(every):
        if os.getppid() != parent:
            gone.set()
            models.close()
            service.close(wait=True)
            os._exit(0)


def serve_stdio(stdin: IO[bytes] | None = None, stdout: IO[str] | None = None) -> int:
    """Serve until "shutdown", the end of stdin (the add-on went away) or SIGTERM / SIGINT;
    then every job is cancelled at its next checkpoint (each reports `cancelled`) -> 0."""
    out = stdout or _protocol_stream()
    inp = stdin or sys.stdin.buffer
    lock = threading.Lock()

    gone = threading.Event()  # the client (Blender) went away

    def send(message: dict) -> None:
        """Never raises: a client that vanished must not take the running job down with
        it (the job is cancelled instead, which checkpoints it)."""
        with lock:
            if gone.is_set():
                return
            try:
                out.write(protocol.encode(message))
                out.flush()
            except (OSError, ValueError):
                gone.set()
                service.close(wait=False)

    service = JobService(send)
    models = ModelService(send)
    if stdin is None:  # a real process: leave when the parent dies, even if the pipe lingers
        threading.Thread(target=_watch_parent, args=(service, models, gone), name="conjure-parent-watch",
                         daemon=True).start()
    send({"type": "hello", "capabilities": capabilities()})
    ended = threading.Event()  # shutdown, the end of stdin, or a stop signal

    def read() -> None:
        try:
            _read_messages(inp, send, service, models)
        finally:
            ended.set()

    # The lines are read on a thread of their own, so a signal on the main thread only sets
    # a flag: it never lands inside a half-written protocol line.
    reader = threading.Thread(target=read, name="conjure-stdin", daemon=True)
    reader.start()
    with stop_on_signals(lambda signum: ended.set(), "cancelling the jobs at their next checkpoint"):
        while not ended.wait(0.2):
            pass
    models.close()
    service.close()
    if stdin is None and reader.is_alive():
        # Stopped by a signal, the reader still blocked in stdin: a normal interpreter exit
        # would wait on that file's lock and abort. Everything is written: leave now.
        out.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _read_messages(inp: IO[bytes], send: Callable[[dict], None], service: JobService, models: ModelService) -> None:
    """Until "shutdown" or the end of stdin: each line answered; nothing a client sends
    ends the server (an unexpected failure is reported as an error and the next line read)."""
    while True:
        line = inp.readline(protocol.MAX_LINE + 1)
        if not line:
            return
        if len(line) > protocol.MAX_LINE and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip the rest of the oversized line
                line = inp.readline(protocol.MAX_LINE)
            send({"type": "error", "code": "protocol", "message": "message line too long; it was ignored",
                  "hint": f"keep messages under {protocol.MAX_LINE} bytes (send paths, not file contents)",
                  "traceback": ""})
            continue
        if not line.strip():
            continue
        try:
            msg = protocol.decode(line, protocol.CLIENT_TYPES)
        except protocol.ProtocolError as exc:
            about = {} if exc.job_id is None else {"id": exc.job_id}
            send({"type": "error", "code": "protocol", "message": str(exc), "hint": "the message was ignored",
                  "traceback": "", **about})
            continue
        try:
            if _handle(msg, send, service, models):
                return
        except Exception as exc:  # noqa: BLE001 (reported; the server goes on)
            send({**error_event(exc, "internal", "the message was not carried out"),
                  **({"id": msg["id"]} if isinstance(msg.get("id"), str) else {})})


def _handle(msg: dict, send: Callable[[dict], None], service: JobService, models: ModelService) -> bool:
    """Carry out one message; True for shutdown."""
    kind = msg["type"]
    if kind == "submit":  # its own errors are events
        service.submit(msg["id"], msg["job"], msg.get("base_dir") or msg["out_dir"], msg["out_dir"])
    elif kind == "cancel":
        if not service.cancel(msg["id"]):
            send({"type": "error", "id": msg["id"], "code": "protocol", "message": f"no job {msg['id']!r} to cancel",
                  "hint": "it may have finished already", "traceback": ""})
    elif kind == "free":
        service.free()
    elif kind == "models":
        models.handle(msg)
    elif kind == "ping":
        send({"type": "pong"})
    return kind == "shutdown"
