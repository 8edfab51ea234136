"""The preset files (presets/*.json) by name: what the backend offers, its one list.

Standard library only: the Blender add-on builds its preset menu from the same files
(labels, the preset's description, its recorded time and memory), so a preset added here
appears there without a list of its own.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from .memory_budget import recorded

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    """Every preset, quickest first by its recorded estimate (unrecorded ones last, by name)."""
    table = recorded()
    names = [p.stem for p in PRESET_DIR.glob("*.json")]
    return sorted(names, key=lambda n: (n not in table, float(table.get(n, {}).get("estimate_s", 0.0)), n))


def load_preset(name: str) -> dict:
    """A preset's JSON data; ConfigError naming the field "preset" for an unknown name."""
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(preset_names())}", "preset")
    return json.loads((PRESET_DIR / f"{name}.json").read_text())


def load_mode(mode: str) -> dict | None:
    """presets/modes/<mode>.json (what a mode lays over a preset), None where it has none."""
    path = PRESET_DIR / "modes" / f"{mode}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def describe(name: str) -> str:
    """A preset's description with its recorded time and peak memory (one H100, estimated)."""
    text = str(load_preset(name).get("description", ""))
    entry = recorded().get(name)
    if entry:
        text += f" About {entry['estimate_s'] / 60:.0f} min and {entry['peak_gb']:.1f} GB on one H100 (estimated)."
    return text
