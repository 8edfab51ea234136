"""Files written whole or not at all: a temporary file beside the target, flushed to the
disk (fsync) and renamed onto it when writing succeeded, so a kill, a power cut or a full
disk never leaves a half-written file for a later run to trust."""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def _fsync(path: Path, flags: int = os.O_RDWR) -> None:
    fd = os.open(path, flags)  # read-write: Windows' fsync (_commit) refuses a read-only handle
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """The rename itself on the disk (POSIX; Windows has no directory handles to sync)."""
    if os.name == "posix":
        _fsync(folder, os.O_RDONLY)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields where to write; keeps the suffix so writers that go by it still work. The
    writer must have closed the file when its block ends."""
    path = Path(path)
    tmp = _partial(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)  # after a failure: its space back before anything else is written


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Text (UTF-8) or bytes into `path`, whole or not at all."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)


def copy_atomic(src: str | Path, dst: str | Path) -> None:
    """A copy of src at dst (with src's times), whole or not at all."""
    with atomic_path(dst) as tmp:
        shutil.copy2(src, tmp)


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
    """No space left (or over quota), as the OS says it or as torch.save's writer does
    ("file write failed")."""
    text = str(exc)
    return (getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text
            or "file write failed" in text)
