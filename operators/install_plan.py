"""What Install Backend runs (standard library only, no bpy: tested on its own).

The torch build is picked for the machine: macOS (Apple silicon, the manifest's only Mac
platform) takes PyPI's wheel, MPS included; an NVIDIA driver's CUDA version (from `nvidia-smi`) picks the newest CUDA
build that driver runs; ROCm machines take the ROCm build; everything else the CPU build
(PyPI's Linux default bundles CUDA: gigabytes a CPU machine never uses). An offline machine
installs from a local folder of wheels (`pip download -r requirements/backend.txt -d DIR`
on a connected machine of the same platform). pip reports its download progress as raw
"Progress N of M" lines, shown in the add-on.
"""
from __future__ import annotations

import re
from pathlib import Path

TORCH_INDEX = "https://download.pytorch.org/whl"
# The pinned torch's CUDA builds, oldest first: (index tag, CUDA version it needs).
CUDA_BUILDS = (("cu126", (12, 6)), ("cu128", (12, 8)), ("cu130", (13, 0)))
ROCM_BUILD = "rocm6.4"


def torch_build(system: str, nvidia_smi: str | None, rocm: bool) -> tuple[str, str | None]:
    """-> (what was picked, for the panel; pip index URL, None for PyPI's default wheel).
    system: platform.system(); nvidia_smi: its output (None without a driver)."""
    if system == "Darwin":
        return "Apple (MPS)", None
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", nvidia_smi or "")
    if match:
        driver = (int(match.group(1)), int(match.group(2)))
        fits = [tag for tag, needs in CUDA_BUILDS if needs <= driver]
        if fits:
            return f"NVIDIA GPU, CUDA build {fits[-1]} (driver supports CUDA {driver[0]}.{driver[1]})", \
                f"{TORCH_INDEX}/{fits[-1]}"
        return (f"CPU: the NVIDIA driver supports CUDA {driver[0]}.{driver[1]}, older than the builds "
                f"({CUDA_BUILDS[0][0]} and newer); update the driver and install again"), f"{TORCH_INDEX}/cpu"
    if rocm:
        return f"AMD GPU, ROCm build {ROCM_BUILD}", f"{TORCH_INDEX}/{ROCM_BUILD}"
    return "CPU", f"{TORCH_INDEX}/cpu"


def pinned_torch(requirements: Path) -> str:
    """The `torch==X` line of the backend's requirements."""
    for line in requirements.read_text().splitlines():
        if line.strip().startswith("torch=="):
            return line.strip()
    raise ValueError(f"{requirements} pins no torch version")


def install_commands(venv: Path, python: Path, root: Path, base_python: str, index: str | None,
                     wheels: Path | None = None) -> list[list[str]]:
    """venv (unless there), pip upgrade (online), torch from its build's index (or the
    wheel folder), the rest of the requirements, then `backend doctor`."""
    requirements = root / "requirements" / "backend.txt"
    pip = [str(python), "-m", "pip", "install", "--progress-bar", "raw"]
    source = ["--no-index", "--find-links", str(wheels)] if wheels else []
    commands = [] if python.exists() else [[base_python, "-m", "venv", str(venv)]]
    if not wheels:
        commands.append([str(python), "-m", "pip", "install", "--upgrade", "pip"])
    torch_source = source or (["--index-url", index] if index else [])
    commands.append(pip + [pinned_torch(requirements)] + torch_source)
    commands.append(pip + ["-r", str(requirements)] + source)
    commands.append([str(python), "-m", "backend", "doctor"])
    return commands


_PROGRESS = re.compile(r"Progress (\d+) of (\d+)")
_STEP = re.compile(r"^(Collecting|Downloading|Installing collected packages|Successfully installed|ERROR)\b.*")


def pip_status(text: str) -> tuple[str, float | None]:
    """From pip's output so far: (the last step line, the current download's fraction or None)."""
    step, fraction = "", None
    for line in text.splitlines():
        line = line.strip()
        if m := _PROGRESS.search(line):
            fraction = int(m.group(1)) / max(int(m.group(2)), 1)
        elif _STEP.match(line):
            step, fraction = line[:120], None if not line.startswith("Downloading") else 0.0
    return step, fraction
