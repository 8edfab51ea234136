"""The losses a preset may name, each a typed config registered under its name (guidance/
registers the guidance losses where they are defined; the anchors and regularisers are
registered here), and the parser of a phase's `losses` table into them.

A table entry is a number (the weight) or {"weight": w, <parameter>: value, ...}; an
unknown loss, an unknown parameter or a value of the wrong kind is a ConfigError naming
the dotted key. Defaults live in the config classes only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import ConfigError
from ..guidance import cds, csm, ms, sgc, vpcsm, zero123  # noqa: F401 (each registers its losses)
from ..guidance.base import LOSSES, LossConfig, register_loss


@register_loss("identity")
@dataclass(frozen=True)
class AnchorConfig(LossConfig):
    """Rendered by the phase at its own cameras: the original's views (stylize, edit)."""

    kind: ClassVar[str] = "anchor"


@register_loss("ref_view")
@dataclass(frozen=True)
class RefViewConfig(AnchorConfig):
    """The reference view: the job's image, or one synthesised from C_m."""

    needs_reference: ClassVar[bool] = True


# geometry/regularizers.py and the phases' own terms: a weight only
for _name in ("z_variance", "orientation", "normal_consistency", "laplacian", "sdf_entropy", "tie"):
    register_loss(_name)(LossConfig)


def _value(key: str, default: Any, value: Any) -> Any:
    """value coerced to the kind of the field's default, or ConfigError naming key."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, tuple):
        fixed = len(default) if default and not isinstance(default[0], float) or len(default) == 2 else None
        if isinstance(value, (list, tuple)) and (fixed is None or len(value) == fixed):
            return tuple(_value(f"{key}[{i}]", default[0] if default else 0.0, v) for i, v in enumerate(value))
        shape = f"a list of {fixed}" if fixed else "a list"
        raise ConfigError(f"{key}: expected {shape} of numbers, got {value!r}", key)
    raise ConfigError(f"{key}: expected {type(default).__name__}, got {value!r}", key)


def parse_loss(name: str, entry: Any, path: str) -> LossConfig:
    """One table entry at dotted path (e.g. phase2.losses.cds) -> its typed config."""
    cls = LOSSES.get(name)
    if cls is None:
        raise ConfigError(f"{path}: unknown loss {name!r}; known: {', '.join(LOSSES)}", path)
    if isinstance(entry, (int, float)) and not isinstance(entry, bool):
        entry = {"weight": entry}
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: a loss is a weight or an object with a weight, got {entry!r}", path)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in entry:
        if key not in fields:
            raise ConfigError(f"{path}.{key}: {name} has no parameter {key!r}; it has {', '.join(fields)}",
                              f"{path}.{key}")
    kwargs = {k: _value(f"{path}.{k}", fields[k].default, v) for k, v in entry.items()}
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}", path) from exc


def parse_losses(table: dict, path: str) -> dict[str, LossConfig]:
    """A phase's losses table (at path, e.g. phase1.losses) -> {name: config}."""
    return {name: parse_loss(name, entry, f"{path}.{name}") for name, entry in table.items()}


def loss_weight(table: dict, name: str) -> float:
    """The weight of loss `name` in a losses table; 0 when the table does not name it."""
    return parse_loss(name, table[name], name).weight if name in table else 0.0
