"""What the add-on needs of a backend (Backend), whichever process it is: messages queued by
a reader thread and drained with poll() on Blender's main thread."""
from __future__ import annotations

import queue
import time
from pathlib import Path

from .. import protocol
from ..job import Job


def error_message(code: str, message: str, hint: str = "", job_id: str | None = None) -> dict:
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

    def submit(self, job: Job, base_dir: str | Path, out_dir: str | Path, job_id: str | None = None) -> str:
        raise NotImplementedError

    def cancel(self, job_id: str) -> None:
        raise NotImplementedError

    def models(self, action: str, roles: list[str] | None = None, job: Job | None = None,
               accept_licences: bool = False) -> None:
        """Model status, download or cancel (protocol.MODEL_ACTIONS); the answers arrive as
        messages (models, download, models_done, error)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def alive(self) -> bool:
        raise NotImplementedError
