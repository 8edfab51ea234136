"""The losses a preset may name, each a typed config registered under its name (guidance/
registers the guidance losses where they are defined; the anchors and regularisers are
registered here), and the parser of a phase's `losses` table into them.

A table entry is a number (the weight) or {"weight": w, <parameter>: value, ...}; an
unknown loss, an unknown parameter or a value of the wrong kind is a ConfigError naming
the dotted key. Defaults live in the config classes only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import ConfigError
from ..guidance import cds, csm, ms, sgc, vpcsm, zero123  # noqa: F401 (each registers its losses)
from ..guidance.base import LOSSES, LossConfig, register_loss
from ..schema import parse


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


def parse_loss(name: str, entry: Any, path: str) -> LossConfig:
    """One table entry at dotted path (e.g. phase2.losses.cds) -> its typed config."""
    cls = LOSSES.get(name)
    if cls is None:
        raise ConfigError(f"{path}: unknown loss {name!r}; known: {', '.join(LOSSES)}", path)
    if isinstance(entry, (int, float)) and not isinstance(entry, bool):
        entry = {"weight": entry}
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: a loss is a weight or an object with a weight, got {entry!r:.80}", path)
    return parse(cls, entry, path)


def parse_losses(table: Any, path: str) -> dict[str, LossConfig]:
    """A phase's losses table (at path, e.g. phase1.losses) -> {name: config}."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: expected an object of losses, got {table!r:.80}", path)
    return {name: parse_loss(name, entry, f"{path}.{name}") for name, entry in table.items()}


def loss_weight(table: dict, name: str) -> float:
    """The weight of loss `name` in a losses table; 0 when the table does not name it."""
    return parse_loss(name, table[name], name).weight if name in table else 0.0
