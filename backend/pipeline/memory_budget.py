"""What a preset needs on the device, from the figures `bench --estimate --record` wrote
(standard library only: the add-on shows them next to the preset; a job is checked against
the free memory of the device it runs on before any work: the GPU's, or the machine's on
the CPU)."""
from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

TABLE = Path(__file__).with_name("preset_estimates.json")
MARGIN_GB = 1.0  # CUDA context and allocator slack on top of what tensors hold
# The estimates count fp16 tensors (what CUDA runs); on the CPU the networks and their
# activations are fp32 (models/store.py), twice the bytes.
CPU_FACTOR = 2.0


def recorded() -> dict[str, dict]:
    return json.loads(TABLE.read_text()) if TABLE.exists() else {}


def estimated_peak_gb(preset: str) -> float | None:
    entry = recorded().get(preset)
    return None if entry is None else float(entry["peak_gb"])


def available_ram_gb() -> float | None:
    """Memory the machine can give a new allocation without swapping: Linux's MemAvailable,
    Windows' available physical memory; None where neither can be read (macOS)."""
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2 ** 20  # kB
        except (OSError, ValueError, IndexError):
            return None
    if os.name == "nt":
        class Status(ctypes.Structure):
            _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong), ("total", ctypes.c_ulonglong),
                        ("available", ctypes.c_ulonglong), ("page_total", ctypes.c_ulonglong),
                        ("page_available", ctypes.c_ulonglong), ("virtual_total", ctypes.c_ulonglong),
                        ("virtual_available", ctypes.c_ulonglong), ("extended", ctypes.c_ulonglong)]

        status = Status(length=ctypes.sizeof(Status))
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
            return status.available / 2 ** 30
    return None


def shortfall(preset: str, free_gb: float, device: str = "cuda") -> tuple[str, str] | None:
    """(message, hint) when the preset's estimated peak on `device` ("cuda" or "cpu") plus
    the margin exceeds free_gb; None when it fits or no estimate is recorded."""
    factor = CPU_FACTOR if device == "cpu" else 1.0
    need = estimated_peak_gb(preset)
    if need is None or need * factor + MARGIN_GB <= free_gb:
        return None
    fitting = sorted((e["peak_gb"] * factor, name) for name, e in recorded().items()
                     if e["peak_gb"] * factor + MARGIN_GB <= free_gb)
    what = "GPU memory" if device == "cuda" else "memory (RAM: the job runs on the CPU)"
    hint = (f"use preset {fitting[-1][1]!r} (about {fitting[-1][0]:.1f} GB)" if fitting else
            "no preset fits: close other programs using the GPU or run on a larger GPU (remote backend)"
            if device == "cuda" else "no preset fits: close other programs, or run on a GPU (remote backend)")
    return (f"preset {preset!r} needs about {need * factor:.1f} GB of {what} (estimate) plus {MARGIN_GB:.0f} GB "
            f"of headroom, and {free_gb:.1f} GB are free", hint + "; lower phaseN.batch or phaseN.resolution to fit")
