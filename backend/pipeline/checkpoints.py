"""A job's checkpoints/ folder, the one place that writes and reads it.

`<phase>.pt` holds a finished phase ({state, fingerprint}); `current.pt` the phase in
progress ({phase, step, state, fingerprint}). Each record carries a SHA-256 checksum of its
content (`checksum`), written with it; files are written atomically (a kill leaves the
previous file or none), loaded weights-only (tensors, numbers and dicts: no pickle code
runs), and discarded from the first phase whose fingerprint (fingerprint.py) no longer
matches the job.

Before a run, verify() loads every record once: one that cannot be read (truncated) or does
not match its checksum (flipped or zeroed bytes) is named in a warning and removed with
the records that depend on it, so the run falls back to the newest good record or starts
the phase again; a damaged record is never trusted and never fails every rerun.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from ..atomic import DiskFull, atomic_path, is_disk_full
from .settings import PHASES
from .fingerprint import changed_parts


class BadRecord(Exception):
    """A record that cannot be trusted; the text says why."""


def _tensors(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    return [t for item in items for t in _tensors(item)]


def _digest(obj: Any, h: Any) -> None:
    """Feed a record's content to a hash: tensors by dtype, shape and bytes (wherever they
    live), containers in order (dict keys sorted), anything else by type and repr."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode())
            _digest(obj[key], h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _digest(item, h)
    else:
        h.update(f"V{type(obj).__name__}:{obj!r}".encode())


def checksum(record: dict) -> str:
    """SHA-256 (hex) of a record's content."""
    h = hashlib.sha256()
    _digest(record, h)
    return h.hexdigest()


class Checkpoints:
    def __init__(self, out_dir: Path, warn: Callable[[str], None] = lambda message: None) -> None:
        """warn: where a damaged record is reported (the job's log)."""
        self.folder = Path(out_dir) / "checkpoints"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._current = self.folder / "current.pt"
        self.warn = warn

    def _path(self, phase: str) -> Path:
        return self.folder / f"{phase}.pt"

    @staticmethod
    def _save(record: dict, path: Path) -> None:
        record = {**record, "checksum": checksum(record)}
        try:
            with atomic_path(path) as tmp:
                # Our own file object, closed here even when a write fails: the temporary
                # file's space is free again before the failure is reported (torch's writer,
                # held by the traceback, would keep it open).
                with open(tmp, "wb") as f:
                    torch.save(record, f)
        except (OSError, RuntimeError) as exc:  # torch's writer words a full disk several ways
            need = sum(t.nbytes for t in _tensors(record))
            if is_disk_full(exc) or shutil.disk_usage(path.parent).free < need:
                raise DiskFull(path.parent, need) from exc
            raise

    @staticmethod
    def _load(path: Path) -> dict:
        """A record that passed its check; BadRecord saying why otherwise."""
        try:
            record = torch.load(path, weights_only=True)
        except Exception as exc:  # noqa: BLE001 (torch words a damaged archive many ways)
            raise BadRecord(f"it cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        if not isinstance(record, dict):
            raise BadRecord(f"it holds a {type(record).__name__}, not a checkpoint")
        stored = record.pop("checksum", None)
        if stored is None:
            raise BadRecord("it has no checksum (written by an older version)")
        if stored != checksum(record):
            raise BadRecord("its content does not match its checksum (the file was damaged)")
        return record

    def verify(self) -> None:
        """Every record checked once. Each bad one is named in a warning, with why, and
        removed with the records that depend on it (after a finished phase's: the later
        phases' and the one in progress); the last warning says where the run resumes."""
        bad: list[tuple[str, str]] = []
        progress_phase = None
        if self._current.exists():
            try:
                progress_phase = self._load(self._current)["phase"]
            except BadRecord as exc:
                bad.append(("current.pt", str(exc)))
        for i, key in enumerate(PHASES):
            if self._path(key).exists():
                try:
                    self._load(self._path(key))
                except BadRecord as exc:
                    bad.append((f"{key}.pt", f"{exc}; {key} and the phases after it run again"))
                    for later in PHASES[i:]:
                        self._path(later).unlink(missing_ok=True)
                    if progress_phase in PHASES[i:]:
                        self._current.unlink(missing_ok=True)
                    break
        if bad and bad[0][0] == "current.pt":
            self._current.unlink(missing_ok=True)
        for name, why in bad:
            self.warn(f"warning: checkpoints/{name} is not used: {why}")
        if bad:
            progress = f"{progress_phase} at its last step" if self._current.exists() else None
            self.warn(f"resuming from {progress or self._newest_good()}")

    def _newest_good(self) -> str:
        done = [key for key in PHASES if self._path(key).exists()]
        return f"checkpoints/{done[-1]}.pt (the phase after it starts again)" if done else "the beginning"

    def save_progress(self, phase: str, step: int, state: dict, fingerprint: dict) -> None:
        """The phase in progress, to resume at `step`."""
        self._save({"phase": phase, "step": step, "state": state, "fingerprint": fingerprint}, self._current)

    def finish(self, phase: str, state: dict, fingerprint: dict) -> None:
        """The phase is done: its record kept, the in-progress one gone."""
        self._save({"state": state, "fingerprint": fingerprint}, self._path(phase))
        self._current.unlink(missing_ok=True)

    def finished(self, phase: str) -> dict | None:
        """A finished phase's state, or None."""
        path = self._path(phase)
        return self._load(path)["state"] if path.exists() else None

    def has(self, phase: str) -> bool:
        """The phase is finished or in progress."""
        return self._path(phase).exists() or self.current_phase() == phase

    def current_phase(self) -> str | None:
        return self._load(self._current)["phase"] if self._current.exists() else None

    def progress(self, phase: str) -> tuple[int, dict] | None:
        """(step, state) of `phase` when it is the one in progress."""
        if not self._current.exists():
            return None
        saved = self._load(self._current)
        return (saved["step"], saved["state"]) if saved["phase"] == phase else None

    def discard_changed(self, fingerprints: dict[str, dict]) -> tuple[str, list[str]] | None:
        """From the first phase whose saved fingerprint differs from the job's, remove its
        checkpoints and all later ones -> (that phase, the parts that changed), or None."""
        current_phase = self.current_phase()
        for i, key in enumerate(PHASES):
            saved = [f for f in (self._path(key), self._current if current_phase == key else None) if f and f.exists()]
            changed = sorted({part for f in saved for part in changed_parts(self._load(f).get("fingerprint"),
                                                                             fingerprints[key])})
            if changed:
                for later in PHASES[i:]:
                    self._path(later).unlink(missing_ok=True)
                self._current.unlink(missing_ok=True)
                return key, changed
        return None
