"""A phase's guidance terms, built from its typed loss configs (losses.py) for the job's
guidance mode: "paper" builds each loss on its models and the job's conditioning;
"oracle" builds the same loss classes on the analytic denoiser of a known target."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..geometry.mesh import Mesh
from ..guidance.base import SDS, AugSDSConfig, Guidance, LossConfig, TimestepSchedule
from ..guidance.cds import CDS, CDSConfig
from ..guidance.csm import CSM, CSMConfig
from ..guidance.diffusion import SDDenoiser
from ..guidance.ms import MSConfig, MSLoss
from ..guidance.oracle import OracleDenoiser
from ..guidance.sgc import PARTS, SGCConfig
from ..guidance.vpcsm import VPCSM, VPCSMConfig
from ..guidance.zero123 import Zero123SDSConfig
from ..render.camera import Cameras, CameraRange, orbit_cameras
from ..render.raster import Rasterizer
from .config import PHASES
from ..errors import ConfigError
from .job_conditioning import JobConditioning, sd_resolution
from .losses import parse_losses
from .sgc_targets import make_sgc

FIXED_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)  # front, right, back, left
# The model roles behind each guidance loss (C_m needs ImageBind); SGC's parts add theirs.
LOSS_ROLES = {"aug_sds": {"unclip", "imagebind"}, "cds": {"unclip", "imagebind"}, "csm": {"sd"},
              "vpcsm": {"sd", "ip_adapter"}, "zero123_sds": {"zero123"}, "ms": {"clip", "imagebind"},
              "sgc": {"zero123"}}
SGC_PART_ROLES = {"reward": "reward", "semantic": "dino", "depth": "depth", "normal": "depth"}
NEEDS_REFERENCE = ("ref_view", "zero123_sds", "sgc")


@dataclass
class Term:
    name: str
    weight: float
    guidance: Guidance


def four_views(phase_cfg: dict) -> Cameras:
    """Front, right, back, left at the middle of the phase's camera ranges."""
    r = CameraRange.from_dict(phase_cfg["cameras"])
    mid = lambda v: (v[0] + v[1]) / 2  # noqa: E731
    return orbit_cameras(mid(r.elevation), torch.tensor(FIXED_AZIMUTHS), mid(r.radius), mid(r.fov),
                         int(phase_cfg["resolution"]))


def _tiny_decoder(cfg: AugSDSConfig) -> bool:
    return cfg.image_weight > 0 and cfg.image_decoder == "tiny"


def paper_term(name: str, cfg: LossConfig, phase_cfg: dict, cond: JobConditioning) -> Guidance:
    """The guidance of loss `name` on its models."""
    weighting, seed = phase_cfg.get("weighting", "sds"), cond.seed
    schedule = TimestepSchedule(**phase_cfg["timesteps"])
    if isinstance(cfg, AugSDSConfig):
        decoder = cond.store.tiny_decoder() if _tiny_decoder(cfg) else None
        return SDS(cond.unclip(cfg.guidance_scale, cfg.max_resolution), schedule, weighting, cfg.image_weight, seed, decoder)
    if isinstance(cfg, CDSConfig):
        return CDS(cond.unclip(cfg.guidance_scale, cfg.max_resolution), cfg, schedule, weighting, seed)
    if isinstance(cfg, VPCSMConfig):
        sd = cond.store.sd("sd")
        den = SDDenoiser(sd, cond.text, resolution=sd_resolution(sd), visual_prompt=cond.visual_prompt(sd),
                         ip_scale=cfg.ip_scale)
        return VPCSM(den, cfg, weighting, seed, four_views(phase_cfg) if cfg.fixed_views else None)
    if isinstance(cfg, CSMConfig):
        sd = cond.store.sd("sd")
        return CSM(SDDenoiser(sd, cond.text, resolution=sd_resolution(sd)), cfg, weighting, seed)
    if isinstance(cfg, Zero123SDSConfig):
        return SDS(cond.zero123(cfg.guidance_scale), schedule, weighting, 0.0, seed)
    if isinstance(cfg, SGCConfig):
        return make_sgc(cond, cfg)
    if isinstance(cfg, MSConfig):
        encoder, size = cond.store.clip_image_encoder()
        return MSLoss(encoder, cond.c_m()[0], size, cfg, seed)
    raise ConfigError(f"loss {name!r} is not available with paper guidance in this build")


def oracle_term(cfg: LossConfig, phase_cfg: dict, oracle: OracleDenoiser, seed: int) -> Guidance | None:
    """The 2D diffusion losses, and Zero-1-to-3's SDS (the oracle sees the target from any
    view, as Zero-1-to-3 imagines it), on the oracle's branches; None for the losses that
    need prompts and models (MS, SGC). SDS reads the conditional branch itself: it is the
    exact target, and classifier-free guidance, which makes up for a learnt model's weak
    conditioning, would extrapolate past it (CFG is checked on the oracle by the formula
    tests). CSM and VPCSM are built on the branches, as TV-3DG defines them. CDS has no
    gradient at all on the one-image oracle (the probability-flow ODE of a single image is
    a straight line, so both ends of a step predict the same noise; on a Gaussian it pulls
    towards noise: tests/test_loss_formulas.py), so the oracle measures its phase with SDS
    over CDS's timestep window."""
    weighting = phase_cfg.get("weighting", "sds")
    schedule = TimestepSchedule(**phase_cfg["timesteps"])
    if isinstance(cfg, AugSDSConfig):
        return SDS(oracle, schedule, weighting, cfg.image_weight, seed)
    if isinstance(cfg, Zero123SDSConfig | CDSConfig):
        return SDS(oracle, schedule, weighting, 0.0, seed)
    if isinstance(cfg, VPCSMConfig):
        return VPCSM(oracle, cfg, weighting, seed, four_views(phase_cfg) if cfg.fixed_views else None)
    if isinstance(cfg, CSMConfig):
        return CSM(oracle, cfg, weighting, seed)
    return None


def build_terms(phase_cfg: dict, mode: str, raster: Rasterizer, seed: int, log: Callable[[str], None],
                oracle_target: Mesh | None = None, cond: JobConditioning | None = None) -> list[Term]:
    """Guidance terms of one phase (anchors and regularisers are the phase's own). With
    paper guidance the previous phase's models leave the GPU first, and the encoders that
    only condition leave it once the terms are built, so a phase holds only what its
    steps run."""
    if cond is not None:
        cond.store.park()
    terms: list[Term] = []
    denoiser = None
    for name, cfg in parse_losses(phase_cfg["losses"], "losses").items():
        if cfg.kind != "guidance" or cfg.weight == 0:
            continue
        if mode == "oracle":
            if oracle_target is None:
                raise ConfigError("oracle guidance needs oracle.target_mesh")
            denoiser = denoiser or OracleDenoiser(oracle_target, raster)
            guidance = oracle_term(cfg, phase_cfg, denoiser, seed)
            if guidance is None:
                log(f"oracle guidance: {name} needs prompts and models, skipped")
                continue
        else:
            if cond is None:
                raise ConfigError("paper guidance needs its models and conditioning (JobConditioning)")
            guidance = paper_term(name, cfg, phase_cfg, cond)
        terms.append(Term(name, cfg.weight, guidance))
    if cond is not None:
        cond.store.release_conditioning()
    return terms


def required_roles(has_reference_image: bool, phase_cfgs: list[dict]) -> set[str]:
    """The model roles the phases' losses will load (the segmenter is optional: without it
    masks come from the border flood fill); without a reference image the reference view
    is synthesised from C_m."""
    roles: set[str] = set()
    wants_reference = False
    for phase_cfg in phase_cfgs:
        if int(phase_cfg["iterations"]) <= 0:
            continue
        for name, cfg in parse_losses(phase_cfg["losses"], "losses").items():
            if cfg.weight <= 0:
                continue
            roles |= LOSS_ROLES.get(name, set())
            if isinstance(cfg, AugSDSConfig) and _tiny_decoder(cfg):
                roles.add("taesd")
            if isinstance(cfg, SGCConfig):
                roles |= {SGC_PART_ROLES[k] for k in PARTS if getattr(cfg, k) > 0}
            wants_reference |= name in NEEDS_REFERENCE
    if wants_reference and not has_reference_image:
        roles |= {"unclip", "imagebind"}
    return roles


def needed_roles(job: dict) -> set[str]:
    """The roles a job dict (unvalidated: mode, preset, overrides, prompt) will load."""
    from ..protocol import JOB_DEFAULTS
    from .config import resolve

    job = {**JOB_DEFAULTS, **job}
    return job_roles(job, resolve(job["preset"], job["overrides"], job["mode"]))


def job_roles(job: dict, cfg: dict) -> set[str]:
    """The roles a job (its mode, prompt and resolved config) will load: stylize and edit
    start at phase II."""
    used = PHASES if job.get("mode", "generate") == "generate" else PHASES[1:]
    reference = bool((job.get("prompt") or {}).get("images") or job.get("style_image"))
    return required_roles(reference, [cfg[p] for p in used])
