"""What Install Backend runs (standard library only, no bpy: tested on its own).

The torch build is picked for the machine: macOS (Apple silicon, the manifest's only Mac
platform) takes PyPI's wheel, MPS included; an NVIDIA driver's CUDA version (from `nvidia-smi`) picks the newest CUDA
build that driver runs; ROCm machines take the newest ROCm build; everything else the CPU
build (PyPI's Linux default bundles CUDA: gigabytes a CPU machine never uses). Which builds
exist is asked of the PyTorch index (its PEP 503 page of torch wheels, one file name per
build: `torch-2.13.0+cu130-cp311-cp311-manylinux_2_28_x86_64.whl`) for the pinned version,
this Python and this platform; the fixed table below is only the answer offline. An offline machine
installs from a local folder of wheels (`pip download -r requirements/backend.txt -d DIR`
on a connected machine of the same platform). pip reports its download progress as raw
"Progress N of M" lines, shown in the add-on.
"""
from __future__ import annotations

import re
from pathlib import Path

TORCH_INDEX = "https://download.pytorch.org/whl"
# The offline answer (not checked against the index): build tags of the pinned torch.
OFFLINE_BUILDS = ("cpu", "cu126", "cu128", "cu130", "rocm6.4")
_WHEEL = re.compile(r"torch-([^-+]+)\+([a-z0-9.]+)-(cp\d+)-(cp\d+t?)-([A-Za-z0-9_.]+)\.whl")


def wheel_platform(system: str, machine: str) -> tuple[str, ...]:
    """What a wheel's platform tag must contain here: Linux x86_64 -> manylinux, x86_64."""
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())
    return ("win", "amd64") if system == "Windows" else ("linux", arch)


def index_builds(page: str, version: str, python_tag: str, platform: tuple[str, ...]) -> list[str]:
    """The build tags (cpu, cu128, rocm6.4, ...) the index page lists for torch==version,
    this CPython (python_tag, e.g. cp311) and a platform tag containing every part of
    `platform` (wheel_platform)."""
    return sorted({tag for v, tag, py, abi, plat in _WHEEL.findall(page)
                   if v == version and py == python_tag == abi and all(part in plat for part in platform)})


def query_index(version: str, python_tag: str, platform: tuple[str, ...], url: str = f"{TORCH_INDEX}/torch/",
                timeout: float = 15.0) -> list[str] | None:
    """index_builds of the live index page; None when it cannot be read (offline)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            page = r.read(64 << 20).decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    return index_builds(page, version, python_tag, platform) or None


def _cuda(tag: str) -> tuple[int, int] | None:
    """cu130 -> (13, 0), cu118 -> (11, 8); None for other tags."""
    m = re.fullmatch(r"cu(\d+)(\d)", tag)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _rocm(tag: str) -> tuple[int, ...] | None:
    m = re.fullmatch(r"rocm(\d+(?:\.\d+)*)", tag)
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def torch_build(system: str, nvidia_smi: str | None, rocm: bool, builds: list[str] | tuple[str, ...] | None = None
                ) -> tuple[str, str | None]:
    """-> (what was picked, for the panel; pip index URL, None for PyPI's default wheel).
    system: platform.system(); nvidia_smi: its output (None without a driver); builds: what
    the index has (query_index), None for the offline table."""
    if system == "Darwin":
        return "Apple (MPS)", None
    where = "offline table" if builds is None else "from the index"
    builds = OFFLINE_BUILDS if builds is None else builds
    cuda = sorted((_cuda(t), t) for t in builds if _cuda(t))  # oldest first
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", nvidia_smi or "")
    if match and cuda:
        driver = (int(match.group(1)), int(match.group(2)))
        fits = [tag for needs, tag in cuda if needs <= driver]
        if fits:
            return (f"NVIDIA GPU, CUDA build {fits[-1]} (driver supports CUDA {driver[0]}.{driver[1]}; {where})",
                    f"{TORCH_INDEX}/{fits[-1]}")
        return (f"CPU: the NVIDIA driver supports CUDA {driver[0]}.{driver[1]}, older than the builds "
                f"({cuda[0][1]} and newer); update the driver and install again"), f"{TORCH_INDEX}/cpu"
    rocm_builds = sorted((_rocm(t), t) for t in builds if _rocm(t))
    if rocm and rocm_builds:
        return f"AMD GPU, ROCm build {rocm_builds[-1][1]} ({where})", f"{TORCH_INDEX}/{rocm_builds[-1][1]}"
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
