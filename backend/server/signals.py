"""SIGTERM and SIGINT (kill, systemd, Ctrl-C) for `run`, `serve --stdio` and `serve --http`:
the first asks the caller to cancel its jobs, which checkpoint at their next step, report
`cancelled` and let the process exit 0; a second ends the process at once (the job then
resumes from its previous checkpoint)."""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(stop: Callable[[int], None], what: str) -> Iterator[None]:
    """While the block runs, the first SIGTERM / SIGINT calls stop(signum) on the main
    thread (keep it short: set a flag, start a thread); `what` says what happens next, on
    stderr. Outside the main thread (a test's in-process server) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if received:
            print(f"{name} again: stopping now; the job resumes from its last checkpoint", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        received.append(signum)
        print(f"{name}: {what} (send it again to stop at once)", file=sys.stderr, flush=True)
        stop(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
