"""Presets are data (presets/*.json); jobs change them with dotted overrides.

An override must name an existing key and keep its type (int may stand for float; a
list or a number may stand for a camera range); anything else is rejected with the key
named, before any work starts.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).parent / "presets"


# Diffusion / conditioning terms (guidance/) and regularisers (geometry/regularizers.py).
GUIDANCE_LOSSES = ("aug_sds", "cds", "csm", "vpcsm", "zero123_sds", "ref_view", "ms", "sgc")
# Rendered by the phase itself: the reference view, and (stylize / edit) the original's views.
ANCHOR_LOSSES = ("ref_view", "identity")
REGULARIZERS = ("z_variance", "orientation", "normal_consistency", "laplacian", "sdf_entropy", "tie")
KNOWN_LOSSES = GUIDANCE_LOSSES + ("identity",) + REGULARIZERS


class ConfigError(ValueError):
    pass


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> dict:
    path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(preset_names())}")
    return json.loads(path.read_text())


def _compatible(old: Any, new: Any) -> bool:
    number = (int, float)
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, number) and isinstance(new, number):
        return isinstance(old, float) or isinstance(new, int)
    if isinstance(old, (list, *number)) and isinstance(new, (list, *number)) and not isinstance(old, dict):
        return True  # a fixed value and a [lo, hi] range are interchangeable
    if isinstance(old, dict) and isinstance(new, (int, float)):
        return "weight" in old  # a loss given as {"weight": ...} may be set by its weight
    return type(old) is type(new)


def apply_overrides(preset: dict, overrides: dict[str, Any]) -> dict:
    cfg = copy.deepcopy(preset)
    for key, value in overrides.items():
        parts = key.split(".")
        node = cfg
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"override {key!r}: unknown key {'.'.join(parts[:i + 1])!r}")
            node = node[part]
        leaf = parts[-1]
        losses_table = parts[-2:-1] == ["losses"]
        if not isinstance(node, dict) or (leaf not in node and not losses_table):
            raise ConfigError(f"override {key!r}: unknown key")
        if leaf in node and not _compatible(node[leaf], value):
            raise ConfigError(f"override {key!r}: expected {type(node[leaf]).__name__}, got {type(value).__name__}")
        if losses_table and leaf not in KNOWN_LOSSES:
            raise ConfigError(f"override {key!r}: unknown loss {leaf!r}; known: {', '.join(KNOWN_LOSSES)}")
        if losses_table and not isinstance(value, (int, float, dict)):
            raise ConfigError(f"override {key!r}: a loss weight must be a number")
        if isinstance(node.get(leaf), dict) and isinstance(value, (int, float)):
            node[leaf] = {**node[leaf], "weight": float(value)}
        else:
            node[leaf] = value
    return cfg


def loss_weight(entry: float | dict) -> float:
    return float(entry["weight"]) if isinstance(entry, dict) else float(entry)


def loss_params(entry: float | dict) -> dict:
    return {k: v for k, v in entry.items() if k != "weight"} if isinstance(entry, dict) else {}


def with_mode(cfg: dict, mode: str) -> dict:
    """Stylize and edit start from a mesh: presets/modes/<mode>.json is laid over the preset,
    phase sections key by key and their tables (cameras, ...) too, except that a mode's
    "losses" table replaces the preset's; other sections whole. Generate uses the preset as
    it is."""
    path = PRESET_DIR / "modes" / f"{mode}.json"
    if mode == "generate" or not path.is_file():
        return cfg
    out = copy.deepcopy(cfg)
    for key, value in json.loads(path.read_text()).items():
        if key == "description":
            continue
        if key.startswith("phase") and isinstance(value, dict):
            out[key] = {**out[key], **{k: {**out[key].get(k, {}), **v} if isinstance(v, dict) and k != "losses" else v
                                       for k, v in copy.deepcopy(value).items()}}
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(preset: str, overrides: dict[str, Any] | None = None, mode: str = "generate") -> dict:
    return apply_overrides(with_mode(load_preset(preset), mode), overrides or {})
