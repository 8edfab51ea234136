"""Files written whole or not at all: a temporary file beside the target, renamed onto it
when writing succeeded (a kill or a full disk never leaves a half-written output)."""
from __future__ import annotations

import os
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
