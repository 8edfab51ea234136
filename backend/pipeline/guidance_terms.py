"""Build a phase's guidance terms from its `losses` table and the job's guidance mode."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..geometry.mesh import Mesh
from ..guidance.base import SDS, Guidance, TimestepSchedule
from ..guidance.oracle import OracleDenoiser
from ..render.raster import Rasterizer
from .config import GUIDANCE_LOSSES, ConfigError, loss_params, loss_weight

# 2D (planar) terms: with the oracle each is the SDS machinery on the analytic denoiser.
PLANAR_TERMS = ("aug_sds", "cds", "csm", "vpcsm")


@dataclass
class Term:
    name: str
    weight: float
    guidance: Guidance


def build_terms(phase_cfg: dict, mode: str, raster: Rasterizer, seed: int, log: Callable[[str], None],
                oracle_target: Mesh | None = None) -> list[Term]:
    terms: list[Term] = []
    schedule = TimestepSchedule(**phase_cfg["timesteps"])
    denoiser = None
    for name, entry in phase_cfg["losses"].items():
        weight = loss_weight(entry)
        if name not in GUIDANCE_LOSSES or weight == 0:
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
            raise ConfigError(f"guidance {mode!r} is not available in this build: use \"oracle\"")
    return terms
