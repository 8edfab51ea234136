"""The losses a preset may name, each a typed config registered under its name (guidance/
registers the guidance losses where they are defined; the anchors and regularisers are
registered here, where what they read is known), and the parser of a phase's `losses`
table into them.

- An anchor is a term on known views: the reference view (a reference image, or one
  synthesised from C_m) and the identity views of stylize / edit's input mesh.
- A regulariser is a term on what a phase's step computed (StepData): it says what it
  reads (`needs`), and a phase that does not compute that refuses it by name.

A table entry is a number (the weight) or {"weight": w, <parameter>: value, ...}; an
unknown loss, an unknown parameter or a value of the wrong kind is a ConfigError naming
the dotted key. Defaults live in the config classes only.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from ..geometry import regularizers as reg
from ..geometry.surfaces import Surface
from ..guidance import cds, csm, ms, sgc, vpcsm, zero123  # noqa: F401 (each registers its losses)
from ..guidance.base import LOSSES, Guidance, LossConfig, PhaseSettings, register_loss
from ..guidance.ref_view import Anchor, RefView
from ..render.volume import VolumeRender
from ..schema import parse


@dataclass(frozen=True)
class AnchorConfig(LossConfig):
    """A term on known views, made for a phase from the views the job has for it."""

    kind: ClassVar[str] = "anchor"

    def anchor_term(self, phase_cfg: PhaseSettings, refs: dict[str | None, RefView]) -> Guidance:
        return Anchor(refs, phase_cfg.resolution)


@register_loss("identity")
@dataclass(frozen=True)
class IdentityConfig(AnchorConfig):
    """The original's views (stylize, edit): keeps what the prompt does not change."""


@register_loss("ref_view")
@dataclass(frozen=True)
class RefViewConfig(AnchorConfig):
    """The reference view: the job's image, or one synthesised from C_m."""

    needs_reference: ClassVar[bool] = True


@dataclass
class StepData:
    """What a phase's step computed, for its regularisers: phase I's volume render (with
    its per-sample normals when a regulariser needs them), phase II's mesh and surface."""

    volume: VolumeRender | None = None
    mesh: tuple[torch.Tensor, torch.Tensor] | None = None  # verts [V,3], faces [F,3]
    surface: Surface | None = None


@dataclass(frozen=True)
class RegularizerConfig(LossConfig):
    """needs: what of StepData it reads ("volume", "normals", "mesh", or a surface's own
    kind: "dmtet", "offsets"); compute: the unweighted term."""

    kind: ClassVar[str] = "regularizer"
    needs: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def compute(self, data: StepData) -> torch.Tensor:
        ...


@register_loss("z_variance")
@dataclass(frozen=True)
class ZVarianceConfig(RegularizerConfig):
    """HiFA's L_nz on the NeRF's rays (XBind Eq. 6-7)."""

    needs: ClassVar[frozenset[str]] = frozenset({"volume"})

    def compute(self, data: StepData) -> torch.Tensor:
        return reg.z_variance(data.volume.weights, data.volume.t_vals)


@register_loss("orientation")
@dataclass(frozen=True)
class OrientationConfig(RegularizerConfig):
    """Ref-NeRF's orientation loss on the NeRF's per-sample normals."""

    needs: ClassVar[frozenset[str]] = frozenset({"volume", "normals"})

    def compute(self, data: StepData) -> torch.Tensor:
        v = data.volume
        return reg.orientation(v.weights, v.sample_normals, v.dirs)


@register_loss("normal_consistency")
@dataclass(frozen=True)
class NormalConsistencyConfig(RegularizerConfig):
    needs: ClassVar[frozenset[str]] = frozenset({"mesh"})

    def compute(self, data: StepData) -> torch.Tensor:
        return reg.normal_consistency(*data.mesh)


@register_loss("laplacian")
@dataclass(frozen=True)
class LaplacianConfig(RegularizerConfig):
    needs: ClassVar[frozenset[str]] = frozenset({"mesh"})

    def compute(self, data: StepData) -> torch.Tensor:
        return reg.laplacian_smoothness(*data.mesh)


@register_loss("sdf_entropy")
@dataclass(frozen=True)
class SdfEntropyConfig(RegularizerConfig):
    """Sign-change entropy on the DMTet's edges (against floaters)."""

    needs: ClassVar[frozenset[str]] = frozenset({"dmtet"})

    def compute(self, data: StepData) -> torch.Tensor:
        dmtet = data.surface.module()
        return reg.sdf_sign_entropy(dmtet.values(), dmtet.edges())


@register_loss("tie")
@dataclass(frozen=True)
class TieConfig(RegularizerConfig):
    """Stylize's offsets kept near the input surface: their mean squared length."""

    needs: ClassVar[frozenset[str]] = frozenset({"offsets"})

    def compute(self, data: StepData) -> torch.Tensor:
        return (data.surface.module()["offset"] ** 2).sum(-1).mean()


def active_regularizers(phase_cfg: Any, path: str, provides: set[str]) -> dict[str, RegularizerConfig]:
    """A phase's regularisers with a weight (phase_cfg.losses), each checked to read only
    what the phase computes (`provides`)."""
    out = {}
    for name, cfg in phase_cfg.losses.items():
        if isinstance(cfg, RegularizerConfig) and cfg.weight > 0:
            missing = cfg.needs - provides
            if missing:
                raise ConfigError(f"{path}.losses.{name}: needs {', '.join(sorted(missing))}, which this phase "
                                  f"does not compute (it has {', '.join(sorted(provides)) or 'none'})",
                                  f"{path}.losses.{name}")
            out[name] = cfg
    return out


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
