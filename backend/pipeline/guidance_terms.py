"""Build a phase's guidance terms from its `losses` table and the job's guidance mode."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..geometry.mesh import Mesh
from ..guidance.base import SDS, Guidance, TimestepSchedule
from ..guidance.oracle import OracleDenoiser
from ..render.raster import Rasterizer
from .config import ANCHOR_LOSSES, GUIDANCE_LOSSES, ConfigError, loss_params, loss_weight

if TYPE_CHECKING:
    from .paper import PaperGuidance

# 2D (planar) terms: with the oracle each is the SDS machinery on the analytic denoiser.
PLANAR_TERMS = ("aug_sds", "cds", "csm", "vpcsm")


@dataclass
class Term:
    name: str
    weight: float
    guidance: "Guidance | SGC"  # SGC renders its own fixed views (Phase.guidance_losses)


def build_terms(phase_cfg: dict, mode: str, raster: Rasterizer, seed: int, log: Callable[[str], None],
                oracle_target: Mesh | None = None, paper: "PaperGuidance | None" = None) -> list[Term]:
    """Guidance terms of one phase. ref_view is not among them: the phase renders the
    reference camera itself (Phase.guidance_losses). With paper guidance the previous
    phase's models leave the GPU first, and the encoders that only condition leave it once
    the terms are built, so a phase holds only what its steps run."""
    if paper is not None:
        paper.store.park()
    terms: list[Term] = []
    schedule = TimestepSchedule(**phase_cfg["timesteps"])
    denoiser = None
    for name, entry in phase_cfg["losses"].items():
        weight = loss_weight(entry)
        if name not in GUIDANCE_LOSSES or name in ANCHOR_LOSSES or weight == 0:
            continue
        if mode == "oracle":
            if name not in PLANAR_TERMS:
                log(f"oracle guidance: {name} needs prompts and models, skipped")
                continue
            if denoiser is None:
                if oracle_target is None:
                    raise ConfigError("oracle guidance needs oracle.target_mesh")
                denoiser = OracleDenoiser(oracle_target, raster)
            params = loss_params(entry)
            terms.append(Term(name, weight, SDS(denoiser, schedule, phase_cfg.get("weighting", "sds"),
                                                params.get("image_weight", 0.0), seed)))
        else:
            if paper is None:
                raise ConfigError("paper guidance needs its models and conditioning (PaperGuidance)")
            terms.append(Term(name, weight, paper.term(name, phase_cfg, loss_params(entry))))
    if paper is not None:
        paper.store.release_conditioning()
    return terms
