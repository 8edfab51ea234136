"""A phase's terms, built from its typed loss configs (losses.py): a guidance loss for the
job's guidance mode ("paper": on its models and the job's conditioning; "oracle": the same
loss classes on the analytic denoiser of a known target), an anchor from the known views
the job has for it. Each config builds its own term and names its roles
(guidance/base.GuidanceConfig). Regularisers are the phase's own (phases.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError
from ..geometry.mesh import Mesh
from ..job import Job
from ..guidance.base import Guidance, GuidanceConfig
from ..guidance.oracle import OracleDenoiser
from ..guidance.ref_view import RefView
from ..render.raster import Rasterizer
from .job_conditioning import JobConditioning
from .losses import AnchorConfig
from .seeds import stream_seed
from .settings import PHASES, Config, PhaseConfig


@dataclass
class Term:
    name: str
    weight: float
    guidance: Guidance


# An anchor loss's known views: {shading they were made in (None: any): views}.
Anchors = dict[str, dict[str | None, RefView]]


def build_terms(phase: str, phase_cfg: PhaseConfig, mode: str, raster: Rasterizer, seed: int,
                log: Callable[[str], None], oracle_target: Mesh | None = None,
                cond: JobConditioning | None = None, anchors: Anchors | None = None) -> list[Term]:
    """The terms of one phase (its key, e.g. "phase1", and config), each guidance term on its
    own random stream of the job seed; anchors: the known views by anchor loss (the
    reference view, the identity views), an anchor without them is skipped, saying so. With
    paper guidance the previous phase's models leave the GPU first, and the encoders that
    only condition leave it once the terms are built, so a phase holds only what its steps
    run."""
    if cond is not None:
        cond.store.park()
    terms: list[Term] = []
    denoiser = None
    for name, cfg in phase_cfg.losses.items():
        if cfg.weight == 0:
            continue
        if isinstance(cfg, AnchorConfig):
            refs = (anchors or {}).get(name)
            if refs is None:
                log(f"{phase}: {name} has no views to anchor to in this job, skipped")
            else:
                terms.append(Term(name, cfg.weight, cfg.anchor_term(phase_cfg, refs)))
            continue
        if not isinstance(cfg, GuidanceConfig):
            continue
        if mode == "oracle":
            if oracle_target is None:
                raise ConfigError("oracle guidance needs oracle.target_mesh")
            denoiser = denoiser or OracleDenoiser(oracle_target, raster)
            guidance = cfg.oracle_term(phase_cfg, denoiser, stream_seed(seed, phase, name))
            if guidance is None:
                log(f"oracle guidance: {name} needs prompts and models, skipped")
                continue
        else:
            if cond is None:
                raise ConfigError("paper guidance needs its models and conditioning (JobConditioning)")
            guidance = cfg.paper_term(phase_cfg, cond, stream_seed(seed, phase, name))
        terms.append(Term(name, cfg.weight, guidance))
    if cond is not None:
        cond.store.release_conditioning()
    return terms


def required_roles(has_reference_image: bool, phase_cfgs: list[PhaseConfig]) -> set[str]:
    """The model roles the phases' losses will load (the segmenter is optional: without it
    masks come from the border flood fill); without a reference image the reference view
    is synthesised from C_m."""
    roles: set[str] = set()
    wants_reference = False
    for phase_cfg in phase_cfgs:
        if phase_cfg.iterations <= 0:
            continue
        for cfg in phase_cfg.losses.values():
            if cfg.weight <= 0:
                continue
            roles |= cfg.model_roles()
            wants_reference |= cfg.needs_reference
    if wants_reference and not has_reference_image:
        roles |= {"unclip", "imagebind"}
    return roles


def needed_roles(job: Job) -> set[str]:
    """The roles a job (its mode, preset, overrides, prompt; files need not be resolved) will load."""
    from .config import resolve

    return job_roles(job, resolve(job.preset, dict(job.overrides), job.mode))


def job_roles(job: Job, cfg: Config) -> set[str]:
    """The roles a job (its mode, prompt and resolved config) will load: stylize and edit
    start at phase II."""
    used = PHASES if job.mode == "generate" else PHASES[1:]
    return required_roles(job.has_reference_image, [cfg.phase(p) for p in used])
