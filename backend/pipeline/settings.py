"""The typed form of a resolved preset (presets/*.json with a mode and a job's overrides laid
over it, config.py): a frozen dataclass per section, parsed by backend/schema.py. Sections
a component owns live with it (cameras: render/camera.py, shading: render/shading.py,
timesteps: guidance/base.py, field: geometry/fields.py, sdf_grid: geometry/dmtet.py,
export: export/mesh_export.py, each loss: where it is registered); the phases' and the
job-wide sections are here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError
from ..export.mesh_export import ExportConfig
from ..geometry.dmtet import SdfGridConfig
from ..geometry.fields import FieldConfig
from ..guidance.base import LossConfig, TimestepSchedule, Weighting
from ..render.camera import CameraRange
from ..render.shading import Background, ShadingMix
from ..schema import setting
from .losses import parse_losses

PHASES = ("phase1", "phase2", "phase3")


@dataclass(frozen=True, kw_only=True)
class RenderConfig:
    """rasterizer: "auto" (nvdiffrast on CUDA when installed, else torch), "torch" or
    "nvdiffrast"; bound: the half-side of the world box the object lives in."""

    rasterizer: Literal["auto", "torch", "nvdiffrast"] = "auto"
    bound: float = setting(1.0, lo=0.1, hi=100.0)


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """compile: torch.compile the networks a step calls without gradient (CUDA only);
    fused_grid: the hash grid's Triton kernels where they run (CUDA with Triton);
    cuda_graphs: the networks a step calls replay CUDA graphs, forward and backward (CUDA
    only, and not with compile, whose own graphs those are; models/graphs.py)."""

    compile: bool = False
    fused_grid: bool = True
    cuda_graphs: bool = True


@dataclass(frozen=True, kw_only=True)
class ProgressConfig:
    """Steps between preview images and between checkpoints of a phase."""

    preview_every: int = setting(lo=1, hi=1_000_000)
    checkpoint_every: int = setting(lo=1, hi=1_000_000)


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """Stylize and edit's input mesh (presets/modes/*.json `source`): decimated to max_faces;
    its colours fitted into the texture field in texture_fit_steps; stylize may keep its
    UVs; the identity loss renders identity_views views at identity_resolution; edit's
    grid extends edit_margin of the mesh's largest side beyond its box."""

    max_faces: int = setting(lo=100, hi=50_000_000)
    texture_fit_steps: int = setting(lo=0, hi=100_000)
    keep_uvs: bool = setting()
    identity_views: int = setting(lo=1, hi=64)
    identity_resolution: int = setting(128, lo=16, hi=4096)
    edit_margin: float = setting(0.25, lo=0.0, hi=4.0)


@dataclass(frozen=True, kw_only=True)
class PhaseConfig:
    """What every phase has: `iterations` steps of `batch` views at `resolution`² drawn from
    `cameras` in a `shading` mix on a `background`, its optimizer and learning rate, the
    guidance's timestep schedule and SDS weighting, and its losses table."""

    iterations: int = setting(lo=0, hi=1_000_000)
    batch: int = setting(lo=1, hi=64)
    resolution: int = setting(lo=8, hi=4096)
    optimizer: Literal["adam", "adan"] = setting()
    lr: float = setting(lo=1e-8, hi=10.0)
    cameras: CameraRange = setting()
    shading: ShadingMix = setting()
    background: Background = "white"
    timesteps: TimestepSchedule = setting()
    weighting: Weighting = "sds"
    losses: dict[str, LossConfig] = setting(parse=parse_losses)

    def weight(self, loss: str) -> float:
        """The weight of a loss in this phase; 0 when its table does not name it."""
        entry = self.losses.get(loss)
        return entry.weight if entry is not None else 0.0


@dataclass(frozen=True, kw_only=True)
class NeRFPhaseConfig(PhaseConfig):
    """Phase I: `samples` per ray; the occupancy grid refreshed every occupancy_every steps
    at occupancy_threshold density; the field's grid and MLPs."""

    samples: int = setting(lo=1, hi=1024)
    occupancy_every: int = setting(lo=1, hi=1_000_000)
    occupancy_threshold: float = setting(lo=0.0, hi=1e6)
    field: FieldConfig = setting()


@dataclass(frozen=True, kw_only=True)
class GeometryPhaseConfig(PhaseConfig):
    """Phase II: a tet grid of tet_res per side, its SDF from phase I's density at
    density_threshold (or lower where that would lose the object), its SDF levels."""

    tet_res: int = setting(lo=4, hi=512)
    density_threshold: float = setting(lo=1e-6, hi=1e6)
    sdf_grid: SdfGridConfig = SdfGridConfig()


@dataclass(frozen=True, kw_only=True)
class TexturePhaseConfig(PhaseConfig):
    """Phase III: a diffuse or PBR (roughness, metallic) texture field."""

    material: Literal["diffuse", "pbr"] = setting()

    def check(self, path: str) -> None:
        if self.material == "pbr" and self.shading.lambertian <= 0:
            raise ConfigError(f"{path}.material: a PBR material learns roughness and metallic from lit views; give "
                              f"{path}.shading.lambertian a weight > 0 (e.g. 0.5)", f"{path}.shading.lambertian")


@dataclass(frozen=True, kw_only=True)
class Config:
    """A resolved preset. source: only for stylize and edit."""

    description: str = ""
    render: RenderConfig = setting()
    runtime: RuntimeConfig = setting()
    phase1: NeRFPhaseConfig = setting()
    phase2: GeometryPhaseConfig = setting()
    phase3: TexturePhaseConfig = setting()
    export: ExportConfig = setting()
    progress: ProgressConfig = setting()
    source: SourceConfig | None = None

    def phase(self, key: str) -> PhaseConfig:
        """phase1, phase2 or phase3 by name."""
        return getattr(self, key)
