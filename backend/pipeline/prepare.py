"""Everything a run needs, made before it starts: the device and rasterizer, the phases'
shared context, the user's mesh (stylize, edit) or the oracle's target, the job's models
and conditioning (its reference view included), and the phases' fingerprints. Nothing on
disk is read but the job's inputs and models, and nothing is written or deleted: the
runner does that (pipeline/runner.py)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from ..geometry.mesh import Mesh, load_mesh, normalized
from ..geometry.source_mesh import SourceMesh, prepare_source
from ..errors import OutOfGPUMemory
from ..models.store import ModelStore, StoreKey
from ..progress import Stages
from ..job import Job
from ..protocol import JobError
from ..render.raster import Rasterizer, make_rasterizer
from .fingerprint import phase_fingerprints
from .guidance_terms import Anchors, job_roles
from .job_conditioning import JobConditioning
from .memory_budget import available_ram_gb, shortfall
from .phases import PhaseContext
from .settings import PHASES, Config


def resolve_device(name: str) -> torch.device:
    """A job's `device` (auto, cpu, cuda, cuda:N) as this machine has it; JobError naming
    the field for a GPU it does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise JobError("device", f"{name!r}: no CUDA GPU is visible to torch on this machine; use auto or cpu")
        if (device.index or 0) >= count:
            raise JobError("device", f"{name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    return device


def networks_compiled(cfg: Config, device: torch.device) -> bool:
    """runtime.compile asks for torch.compile of the UNets and decoders; it is used on CUDA
    only (on the CPU compiling costs more than it saves)."""
    return cfg.runtime.compile and device.type == "cuda"


def networks_graphed(cfg: Config, device: torch.device) -> bool:
    """runtime.cuda_graphs: on CUDA, unless the networks are compiled."""
    return cfg.runtime.cuda_graphs and device.type == "cuda" and not networks_compiled(cfg, device)


def check_memory(device: torch.device, store: ModelStore, preset: str) -> None:
    """Before any model runs, with the papers' networks: the preset's recorded estimate
    (bench --estimate --record) against the free memory of the device the job runs on, the
    GPU's or the machine's; OutOfGPUMemory (refused, nothing done) when it does not fit."""
    if store.tiny:
        return
    if device.type == "cuda":
        free_gb: float | None = torch.cuda.mem_get_info(device)[0] / 2 ** 30
    else:
        free_gb = available_ram_gb()
    short = None if free_gb is None else shortfall(preset, free_gb, device.type)
    if short is not None:
        raise OutOfGPUMemory(*short)


@dataclass
class RunContext:
    """A validated job (absolute input paths), its typed config and output folder, and what
    prepare() made of them. phase_ctx: what every phase is given; source: stylize / edit's
    mesh; target: the oracle's mesh in the frame the run works in; cond: paper guidance's
    models and conditioning; anchors: the known views of its anchor losses (the reference
    view here, the identity views once the source is ready)."""

    job: Job
    cfg: Config
    out: Path
    phase_ctx: PhaseContext
    source: SourceMesh | None
    target: Mesh | None
    cond: JobConditioning | None
    fingerprints: dict[str, dict[str, str]]
    anchors: Anchors

    @property
    def raster(self) -> Rasterizer:
        return self.phase_ctx.raster

    @property
    def device(self) -> torch.device:
        return self.phase_ctx.device


def prepare(job: Job, cfg: Config, out: Path, log: Callable[[str], None],
            stores: dict[StoreKey, ModelStore] | None = None, input_stages: Stages | None = None) -> RunContext:
    """The RunContext of a job. stores: a server's model stores, kept between its jobs (one
    per StoreKey); ModelNotAvailable before any work when a model the job needs is missing.
    input_stages: the progress of the input mesh's decimation (stylize, edit)."""
    device = resolve_device(job.device)
    ctx = PhaseContext(make_rasterizer(cfg.render.rasterizer, device), device, job.seed, cfg.render.bound,
                       fused_grid=cfg.runtime.fused_grid)
    source = prepare_source(job.mesh, cfg.source.max_faces, input_stages) if job.mode != "generate" else None
    target = cond = None
    anchors: Anchors = {}
    if job.guidance == "oracle":
        mesh = load_mesh(job.oracle.target_mesh)
        # Stylize / edit targets are variants of the input: they share its frame.
        target = (replace(mesh, verts=source.norm.apply(mesh.verts)) if source is not None
                  else normalized(mesh)[0]).to(device)
    else:
        key = StoreKey(job.models, str(device), job.allow_downloads, networks_compiled(cfg, device),
                       networks_graphed(cfg, device))
        store = ModelStore.shared({} if stores is None else stores, key)
        cond = JobConditioning(job, store, log)
        store.check_available(job_roles(job, cfg))
        check_memory(device, store, job.preset)
        if any(cfg.phase(p).iterations > 0 and cfg.phase(p).weight("ref_view") > 0 for p in PHASES):
            anchors["ref_view"] = {None: cond.ref_view()}
    return RunContext(job, cfg, Path(out), ctx, source, target, cond, phase_fingerprints(job, cfg), anchors)
