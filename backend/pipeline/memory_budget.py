"""What a preset needs on the GPU, from the figures `bench --estimate --record` wrote
(standard library only: the add-on shows them next to the preset; a job on CUDA is checked
against the device's free memory before any work)."""
from __future__ import annotations

import json
from pathlib import Path

TABLE = Path(__file__).with_name("preset_estimates.json")
MARGIN_GB = 1.0  # CUDA context and allocator slack on top of what tensors hold


def recorded() -> dict[str, dict]:
    return json.loads(TABLE.read_text()) if TABLE.exists() else {}


def estimated_peak_gb(preset: str) -> float | None:
    entry = recorded().get(preset)
    return None if entry is None else float(entry["peak_gb"])


def shortfall(preset: str, free_gb: float) -> tuple[str, str] | None:
    """(message, hint) when the preset's estimated peak plus the margin exceeds free_gb;
    None when it fits or no estimate is recorded."""
    need = estimated_peak_gb(preset)
    if need is None or need + MARGIN_GB <= free_gb:
        return None
    fitting = sorted((e["peak_gb"], name) for name, e in recorded().items() if e["peak_gb"] + MARGIN_GB <= free_gb)
    hint = (f"use preset {fitting[-1][1]!r} (about {fitting[-1][0]:.1f} GB)" if fitting else
            "no preset fits: close other programs using the GPU or run on a larger GPU (remote backend)")
    return (f"preset {preset!r} needs about {need:.1f} GB of GPU memory (estimate) plus {MARGIN_GB:.0f} GB of "
            f"headroom, and {free_gb:.1f} GB are free", hint + "; lower phaseN.batch or phaseN.resolution to fit")
