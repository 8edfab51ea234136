"""Files written whole or not at all: a temporary file beside the target, renamed onto it
when writing succeeded (a kill or a full disk never leaves a half-written output)."""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields where to write; keeps the suffix so writers that go by it still work."""
    path = Path(path)
    tmp = _partial(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_partials(folder: Path) -> list[Path]:
    """Temporary files of writes that a kill -9 interrupted (no cleanup runs then); the
    targets themselves are whole. -> what was removed."""
    stale = [p for p in folder.rglob(".*.partial*") if p.is_file()] if folder.exists() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class DiskFull(OSError):
    """Writing `folder` ran out of space; says how much was needed and is free."""

    def __init__(self, folder: Path, need: int | None = None) -> None:
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        needed = f"needs about {need / 2 ** 20:.0f} MB, " if need else ""
        super().__init__(errno.ENOSPC, f"disk full at {folder}: {needed}{free / 2 ** 20:.0f} MB free")

    def __str__(self) -> str:
        return self.strerror


def is_disk_full(exc: BaseException) -> bool:
    """No space left, as the OS says it or as torch.save's writer does ("file write failed")."""
    text = str(exc)
    return getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text or "file write failed" in text
