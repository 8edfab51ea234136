"""Files written whole or not at all: a temporary file beside the target, renamed onto it
when writing succeeded (a kill or a full disk never leaves a half-written output)."""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields where to write; keeps the suffix so writers that go by it still work."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
