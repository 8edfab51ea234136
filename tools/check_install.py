"""`make check-install`: resolves requirements/ from PyPI alone, wheels only, with uv's
resolver, for every platform and Python the backend installs on (operators/install_plan.py:
PLATFORMS x PYTHONS, what Install Backend builds from Blender's own Python) and for make
test's venvs on plain Linux x64; one line per target, exit status 1 if any fails. It needs the
network, so it is not part of make test: run it before changing a pin."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.install_plan import MACOS_MIN, PLATFORMS, PYTHONS  # noqa: E402

REQ = ROOT / "requirements"
INDEX = "https://pypi.org/simple"
LINUX = PLATFORMS["linux-x64"]


def targets() -> list[tuple[str, list[tuple[list[Path], str, str]]]]:
    """(label, [(requirement files, uv's --python-platform, Python)]): the backend on each
    platform and Python; make test's .venv (3.11, bpy 4.5) and .venv-bpy (3.13, bpy 5.3)."""
    out = [(f"backend  {name:<12} Python {a}.{b}", [([REQ / "backend.txt", REQ / "installer.txt"], uv, f"{a}.{b}")])
           for name, uv in PLATFORMS.items() for a, b in PYTHONS]
    out.append(("make test  linux-x64    .venv 3.11 + .venv-bpy 3.13",
                [([REQ / "test.txt"], LINUX, "3.11"), ([REQ / "blender-newest.txt"], LINUX, "3.13")]))
    return out


def resolve(files: list[Path], platform: str, python: str) -> tuple[bool, str]:
    """uv pip compile for one target -> (resolved, its pins or uv's reason)."""
    # uv reads no pip configuration; its own (uv.toml, UV_* variables) is left out too, so only
    # PyPI answers. MACOSX_DEPLOYMENT_TARGET: the oldest macOS the backend installs on.
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    env["MACOSX_DEPLOYMENT_TARGET"] = f"{MACOS_MIN[0]}.{MACOS_MIN[1]}"
    cmd = [sys.executable, "-m", "uv", "pip", "compile", "--no-config", "--index-url", INDEX, "--python-platform",
           platform, "--python-version", python, "--only-binary", ":all:", "--no-header", "--no-annotate", "--quiet",
           *map(str, files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()] or ["uv failed"]
        cause = [line.removeprefix("cause:").strip() for line in lines if line.startswith("cause:")]
        return False, (cause or lines[-1:])[0]
    return True, proc.stdout


def summary(pins: str) -> str:
    found = dict(line.split("==", 1) for line in pins.splitlines() if "==" in line)
    shown = ", ".join(f"{k} {found[k]}" for k in ("torch", "numpy", "vtk", "bpy") if k in found)
    return f"{len(found)} packages ({shown})"


def main() -> int:
    failed = 0
    for label, parts in targets():
        results = [resolve(*part) for part in parts]
        ok = all(r[0] for r in results)
        failed += not ok
        detail = "; ".join(summary(text) if good else text for good, text in results)
        print(f"{label:<52} {'resolves' if ok else 'FAILS'}: {detail}", flush=True)
    print(f"{len(targets()) - failed}/{len(targets())} targets resolve")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
