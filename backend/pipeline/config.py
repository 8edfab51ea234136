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

from ..errors import ConfigError
from .losses import LOSSES, parse_losses

PHASES = ("phase1", "phase2", "phase3")


# Ranges of the numeric keys, by the key's own name wherever it stands (checked after the
# overrides, before any work). (low, high, integer); a [lo, hi] pair is checked element-wise.
RANGES: dict[str, tuple[float, float, bool]] = {
    "iterations": (0, 1_000_000, True), "batch": (1, 64, True), "resolution": (8, 4096, True),
    "max_resolution": (8, 4096, True),
    "samples": (1, 1024, True), "tet_res": (4, 512, True), "lr": (1e-8, 10.0, False),
    "occupancy_every": (1, 1_000_000, True), "occupancy_threshold": (0, 1e6, False),
    "density_threshold": (1e-6, 1e6, False), "checkpoint_every": (1, 1_000_000, True),
    "preview_every": (1, 1_000_000, True), "texture_size": (16, 8192, True), "max_faces": (100, 50_000_000, True),
    "uv_padding": (0, 64, True), "preview_resolution": (16, 4096, True), "min_component_fraction": (0, 1, False),
    "radius": (0.1, 100.0, False), "fov": (1.0, 170.0, False), "elevation": (-90.0, 90.0, False),
    "azimuth": (-720.0, 720.0, False), "t_min": (0.0, 1.0, False), "t_max": (0.0, 1.0, False),
    "levels": (1, 32, True), "log2_table": (8, 26, True), "base_res": (2, 4096, True), "max_res": (2, 65536, True),
    "hidden": (1, 1024, True), "bound": (0.1, 100.0, False), "crease_angle": (0.0, 180.0, False),
    "metallic": (0.0, 1.0, False), "roughness": (0.0, 1.0, False),
}


# Keys whose [lo, hi] pair is a range to sample from (other number lists, like the MS loss's
# aug_weights, are values).
RANGE_PAIRS = frozenset({"elevation", "azimuth", "radius", "fov", "gap", "crop_scale"})


def check_ranges(node: Any, path: str = "") -> None:
    """Every number finite, the keys of RANGES within theirs, losses and their parameters
    >= 0: ConfigError naming the dotted key otherwise."""
    if isinstance(node, dict):
        for key, value in node.items():
            check_ranges(value, f"{path}.{key}" if path else key)
        name = path.rsplit(".", 1)[-1]
        if name == "timesteps" and not node.get("t_min", 0) < node.get("t_max", 1):
            raise ConfigError(f"{path}: t_min must be below t_max", f"{path}.t_min")
        return
    name = path.rsplit(".", 1)[-1].split("[")[0]
    values = node if isinstance(node, list) else [node]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if v != v or v in (float("inf"), float("-inf")):
            raise ConfigError(f"{path}: {v} is not a finite number", path)
        if ".losses." in f".{path}." and v < 0:
            raise ConfigError(f"{path}: loss weights and parameters must be >= 0, got {v}", path)
        if name in RANGES:
            lo, hi, integer = RANGES[name]
            if integer and not isinstance(v, int):
                raise ConfigError(f"{path}: expected a whole number, got {v}", path)
            if not lo <= v <= hi:
                raise ConfigError(f"{path}: {v} is outside [{lo:g}, {hi:g}]", path)
    if name in RANGE_PAIRS and isinstance(node, list) and len(node) == 2 and node[0] > node[1]:
        raise ConfigError(f"{path}: a range [lo, hi] needs lo <= hi, got {node}", path)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> dict:
    path = PRESET_DIR / f"{name}.json"
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(preset_names())}", "preset")
    return json.loads(path.read_text())


def _compatible(old: Any, new: Any) -> bool:
    number = (int, float)
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, number) and isinstance(new, number):
        return isinstance(old, float) or isinstance(new, int)
    if isinstance(old, (list, *number)) and isinstance(new, (list, *number)) and not isinstance(old, dict):
        return True  # a fixed value and a [lo, hi] range are interchangeable
    return type(old) is type(new)


def apply_overrides(preset: dict, overrides: dict[str, Any]) -> dict:
    """Dotted keys set on a copy of the preset. Inside a losses table the entries and their
    parameters are left to the loss configs (losses.py) to check, after all overrides: a
    loss given as a weight may become {"weight": ..., <parameter>: ...} and back."""
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
        loss_entry = parts[-3:-2] == ["losses"]
        if not isinstance(node, dict) or (leaf not in node and not (losses_table or loss_entry)):
            raise ConfigError(f"override {key!r}: unknown key", key)
        if losses_table:
            if leaf not in LOSSES:
                raise ConfigError(f"override {key!r}: unknown loss {leaf!r}; known: {', '.join(LOSSES)}", key)
            if isinstance(node.get(leaf), dict) and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = {**node[leaf], "weight": float(value)}
        elif not loss_entry and leaf in node and not _compatible(node[leaf], value):
            raise ConfigError(f"override {key!r}: expected {type(node[leaf]).__name__}, got {type(value).__name__}",
                              key)
        node[leaf] = value
    return cfg


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


MATERIALS = ("diffuse", "pbr")


def check_material(phase3: dict) -> None:
    """phase3.material names a known material; a PBR one is only seen (and learnt) in lit views."""
    material = phase3["material"]
    if material not in MATERIALS:
        raise ConfigError(f"phase3.material: {material!r} is not one of {', '.join(MATERIALS)}", "phase3.material")
    if material == "pbr" and phase3["shading"].get("lambertian", 0) <= 0:
        raise ConfigError("phase3.material: a PBR material learns roughness and metallic from lit views; give "
                          "phase3.shading.lambertian a probability > 0 (e.g. 0.5)", "phase3.shading.lambertian")


def resolve(preset: str, overrides: dict[str, Any] | None = None, mode: str = "generate") -> dict:
    cfg = apply_overrides(with_mode(load_preset(preset), mode), overrides or {})
    check_ranges(cfg)
    check_material(cfg["phase3"])
    for phase in PHASES:
        parse_losses(cfg[phase]["losses"], f"{phase}.losses")  # an unknown key or a typo fails here
    return cfg
