"""Presets are data (presets/*.json); a mode (presets/modes/) and a job's dotted overrides
are laid over them, and the result is parsed into the typed Config (settings.py).

An override must name a key of the preset's sections (a setting the typed config declares
with a default may be named though the preset leaves it out); its value is then checked
by the typed config like any other: kind, finiteness, range, choices, each failure a
ConfigError naming the dotted key, before any work starts.
"""
from __future__ import annotations

import copy
from typing import Any

from ..errors import ConfigError
from ..schema import parse
from .losses import LOSSES
from .preset_files import load_mode, load_preset, preset_names
from .settings import Config


def apply_overrides(preset: dict, overrides: dict[str, Any]) -> dict:
    """Dotted keys set on a copy of the preset (the sections a key walks through must exist;
    its value is checked by the typed parse). A loss given as a weight may become
    {"weight": ..., <parameter>: ...} and back."""
    cfg = copy.deepcopy(preset)
    for key, value in overrides.items():
        parts = key.split(".")
        node = cfg
        for i, part in enumerate(parts[:-1]):
            in_losses = i > 0 and parts[i - 1] == "losses"
            if in_losses and isinstance(node, dict) and isinstance(node.get(part, 0), (int, float)):
                node[part] = {"weight": float(node.get(part, 0))}  # a parameter of a loss named by its weight
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"override {key!r}: unknown key {'.'.join(parts[:i + 1])!r}", key)
            node = node[part]
        leaf = parts[-1]
        losses_table = parts[-2:-1] == ["losses"]
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: unknown key", key)
        if losses_table:
            if leaf not in LOSSES:
                raise ConfigError(f"override {key!r}: unknown loss {leaf!r}; known: {', '.join(LOSSES)}", key)
            if isinstance(node.get(leaf), dict) and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = {**node[leaf], "weight": float(value)}
        node[leaf] = value  # kind, range and whether the key exists at all: the typed parse
    return cfg


def _lay(out: dict, layer: dict) -> None:
    """A layer over config data in place: phase sections key by key and their tables
    (cameras, ...) too, except that a "losses" table replaces the one below; other sections
    whole."""
    for key, value in layer.items():
        if key.startswith("phase") and isinstance(value, dict):
            out[key] = {**out[key], **{k: {**out[key].get(k, {}), **v} if isinstance(v, dict) and k != "losses" else v
                                       for k, v in copy.deepcopy(value).items()}}
        else:
            out[key] = copy.deepcopy(value)


def with_mode(cfg: dict, mode: str, preset: str) -> dict:
    """Stylize and edit start from a mesh: presets/modes/<mode>.json is laid over the preset,
    then the mode's table for that preset ("presets": {"draft": {...}}), where a setting
    depends on both (edit's phase II does all of the shape's change, as it has no phase I,
    so draft's 200 steps are too few for it). Generate uses the preset as it is."""
    layer = None if mode == "generate" else load_mode(mode)
    if layer is None:
        return cfg
    layer = copy.deepcopy(layer)
    by_preset = layer.pop("presets", {})
    layer.pop("description", None)
    unknown = sorted(set(by_preset) - set(preset_names()))
    if unknown:
        raise ConfigError(f"presets/modes/{mode}.json names no preset {', '.join(unknown)}", "presets")
    out = copy.deepcopy(cfg)
    _lay(out, layer)
    _lay(out, by_preset.get(preset, {}))
    return out


def resolve_data(preset: str, overrides: dict[str, Any] | None = None, mode: str = "generate") -> dict:
    """The preset with the mode and the overrides laid over it, as JSON data (what a job's
    config.json holds). Not yet checked: see resolve."""
    return apply_overrides(with_mode(load_preset(preset), mode, preset), overrides or {})


def resolve(preset: str, overrides: dict[str, Any] | None = None, mode: str = "generate") -> Config:
    """The typed, checked config of a preset, mode and overrides (ConfigError naming the
    dotted key of the first problem)."""
    return parse_config(resolve_data(preset, overrides, mode))


def parse_config(data: dict) -> Config:
    return parse(Config, data, "")
