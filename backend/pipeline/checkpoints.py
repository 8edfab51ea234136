"""A job's checkpoints/ folder, the one place that writes and reads it.

`<phase>.pt` holds a finished phase ({state, fingerprint}); `current.pt` the phase in
progress ({phase, step, state, fingerprint}). Files are written atomically (a kill leaves
the previous file or none), loaded weights-only (tensors, numbers and dicts: no pickle
code runs), and discarded from the first phase whose fingerprint (fingerprint.py) no
longer matches the job.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..atomic import DiskFull, atomic_path, is_disk_full
from .settings import PHASES
from .fingerprint import changed_parts


def _tensors(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    return [t for item in items for t in _tensors(item)]


class Checkpoints:
    def __init__(self, out_dir: Path) -> None:
        self.folder = Path(out_dir) / "checkpoints"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._current = self.folder / "current.pt"

    def _path(self, phase: str) -> Path:
        return self.folder / f"{phase}.pt"

    @staticmethod
    def _save(record: dict, path: Path) -> None:
        try:
            with atomic_path(path) as tmp:
                torch.save(record, tmp)
        except (OSError, RuntimeError) as exc:  # torch's writer words a full disk several ways
            need = sum(t.nbytes for t in _tensors(record))
            if is_disk_full(exc) or shutil.disk_usage(path.parent).free < need:
                raise DiskFull(path.parent, need) from exc
            raise

    @staticmethod
    def _load(path: Path) -> dict:
        return torch.load(path, weights_only=True)

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
