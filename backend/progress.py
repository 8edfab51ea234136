"""Steps without iterations (the input mesh's decimation, the DMTet surface between phases
I and II, export) told in stages: a progress event as each stage starts, and a cancel
honoured between stages (the last checkpoint stands; the step runs again on resume)."""
from __future__ import annotations

from typing import Callable

from .errors import Cancelled

Emit = Callable[[dict], None]


class Stages:
    """progress events {phase, step: stages done, total: stages planned, stage: what starts}."""

    def __init__(self, emit: Emit, should_cancel: Callable[[], bool], phase: str, total: int = 0) -> None:
        self.emit, self.should_cancel, self.phase = emit, should_cancel, phase
        self.done, self.total = 0, total

    def add(self, count: int) -> None:
        """Stages found while working (a decimation's count depends on the mesh)."""
        self.total += count

    def start(self, what: str) -> None:
        """Cancelled here when asked to; else the event saying `what` starts now."""
        if self.should_cancel():
            raise Cancelled(f"cancelled in {self.phase}, before {what}")
        self._report(what)
        self.done += 1

    def finish(self) -> None:
        self.done = self.total = max(self.done, self.total)
        self._report("done")

    def _report(self, what: str) -> None:
        self.emit({"type": "progress", "phase": self.phase, "step": self.done, "total": max(self.total, self.done, 1),
                   "losses": {}, "eta_s": 0, "stage": what})
