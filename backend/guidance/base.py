"""The guidance interface and the SDS machinery every diffusion-based loss shares.

A Denoiser is a diffusion model behind a few calls: the renders as it takes them (resized
to its resolution), encoded to its sample space and decoded back, noise predicted for
noisy samples at timesteps given the views being rendered (cameras carry the pose for
view-conditioned models) at a classifier-free guidance scale, and its DDPM schedule. The
SDS code (timestep sampling and annealing, weighting, gradient injection) only talks to
this interface, so the analytic oracle and the real diffusion models run the same
machinery.

Renders are [B,H,W,3] in [0,1] at the boundary, model inputs [B,3,R,R] in [0,1], samples
z [B,C,h,w]. CFG is ε_u + s (ε_c - ε_u) throughout (diffusers', HiFA's and Magic123's
form; threestudio and Consistent3D write ε_c + s (ε_c - ε_u), so their s is our s - 1).
"""
from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Literal, Protocol

import torch

from ..render.camera import CameraRange, Cameras
from ..errors import ConfigError
from ..schema import Ramp, ramp_at, setting
from ..render.shading import Background, Frame, Views, fixed_views
from ..models.encoders import tiny_decoder

from .multiview import MultiviewSettings, SGCTargets

if TYPE_CHECKING:  # the types a loss may ask the job for
    from ..conditioning.embedding import ModalityEmbedding
    from ..models.loaders import SDComponents
    from ..models.store import ModelStore


def ddpm_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """Stable Diffusion's "scaled_linear" schedule: [steps] ᾱ_t."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


class Denoiser(Protocol):
    alphas_cumprod: torch.Tensor  # [T]
    guidance_scale: float  # the CFG scale predict_noise applies

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """Renders [B,H,W,3] -> the images it takes, [B,3,R,R] in [0,1] (differentiable)."""
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Model inputs [B,3,R,R] -> samples; generator: the caller's stream for a stochastic
        encoder's draw (None: its mean)."""
    def decode(self, z: torch.Tensor) -> torch.Tensor: ...
    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, views: Views) -> torch.Tensor: ...
    def with_scale(self, guidance_scale: float) -> "Denoiser":
        """The same denoiser predicting at another CFG scale."""


class Guidance(Protocol):
    """A loss on rendered views. `step`/`total` drive timestep annealing.

    views(shading, background): None to see the phase's sampled batch; else the fixed views
    it renders itself (given the phase's preview shading and background). needs_geometry:
    the frame must carry depth and normals. generator: the CPU generator of its random draws
    (timesteps, noise, augmentations), checkpointed with the phase so that a resumed run
    draws what an uninterrupted one would; None for a loss that draws nothing."""

    needs_geometry: bool
    generator: torch.Generator | None

    def views(self, shading: str, background: Background) -> Views | None: ...
    def __call__(self, frame: Frame, views: Views, step: int, total: int) -> dict[str, torch.Tensor]: ...


class OnBatch:
    """A Guidance that reads the phase's sampled batch (colours only)."""

    needs_geometry = False

    def views(self, shading: str, background: Background) -> Views | None:
        return None


class OnCameras:
    """A Guidance that renders its own fixed cameras (self.cameras) in the phase's shading."""

    cameras: Cameras

    def views(self, shading: str, background: Background) -> Views | None:
        return fixed_views(self.cameras, shading, background)


class Conditioning(Protocol):
    """What a loss may ask of its job under paper guidance (pipeline/job_conditioning.
    JobConditioning implements it): the text, C_m, the reference view, the denoisers
    conditioned on them, SGC's multi-view targets, and the models by role."""

    store: "ModelStore"
    text: str
    seed: int

    def c_m(self) -> "ModalityEmbedding": ...
    def unclip(self, max_resolution: int | None = None) -> "Denoiser":
        """Stable unCLIP conditioned on the text and C_m (at most at max_resolution)."""
    def zero123(self) -> "Denoiser":
        """Zero-1-to-3 conditioned on the reference view."""
    def visual_prompt(self, sd: "SDComponents") -> torch.Tensor: ...
    def sgc_targets(self, cfg: MultiviewSettings) -> tuple[SGCTargets, Cameras]: ...


@dataclass(frozen=True)
class LossConfig(ABC):
    """One entry of a phase's losses table: its weight, and in subclasses the loss's own
    parameters (each default defined there, once). Three kinds, each a base class whose
    method a registered loss must implement (register_loss refuses one that does not):
    GuidanceConfig (a term on renders, from the job's models or the oracle), AnchorConfig
    (pipeline/losses.py: a term on views of a known image) and RegularizerConfig
    (pipeline/losses.py: a term on what a phase's step computed). needs_reference: it needs
    the job's reference view (synthesised from C_m when no image is given)."""

    kind: ClassVar[str]
    needs_reference: ClassVar[bool] = False
    weight: float = setting(1.0, lo=0.0)

    def model_roles(self) -> set[str]:
        """The model roles this loss loads with these parameters."""
        return set()


@dataclass(frozen=True)
class GuidanceConfig(LossConfig):
    """A guidance loss: the model roles it loads, whether it needs the job's reference view,
    and its term for paper guidance (its models and the job's conditioning) and for the
    oracle (the analytic denoiser of a known target; None: it needs prompts and models)."""

    kind: ClassVar[str] = "guidance"
    roles: ClassVar[frozenset[str]] = frozenset()

    def model_roles(self) -> set[str]:
        return set(self.roles)

    @abstractmethod
    def paper_term(self, phase_cfg: "PhaseSettings", cond: Conditioning, seed: int) -> Guidance:
        """seed: the term's own random stream (pipeline/seeds.py)."""

    def oracle_term(self, phase_cfg: "PhaseSettings", oracle: "Denoiser", seed: int) -> Guidance | None:
        return None


Weighting = Literal["sds", "uniform", "fantasia"]


class PhaseSettings(Protocol):
    """What a guidance term reads of its phase's config (pipeline/settings.PhaseConfig)."""

    resolution: int
    cameras: CameraRange
    timesteps: "TimestepSchedule"
    weighting: Weighting


# Loss name -> its config class: what a phase's losses table may name. Each loss registers
# itself where it is defined (register_loss), as threestudio's modules do.
LOSSES: dict[str, type[LossConfig]] = {}


def register_loss(name: str) -> Callable[[type[LossConfig]], type[LossConfig]]:
    """Class decorator: a losses table may name `name` for this config class, which must
    implement its kind's method (a loss that cannot be computed cannot be named)."""
    def add(cls: type[LossConfig]) -> type[LossConfig]:
        if inspect.isabstract(cls):
            raise TypeError(f"loss {name!r}: {cls.__name__} does not implement "
                            f"{', '.join(sorted(cls.__abstractmethods__))}")
        if LOSSES.get(name, cls) is not cls:
            raise ValueError(f"loss {name!r} is already registered to {LOSSES[name].__name__}")
        LOSSES[name] = cls
        return cls
    return add


def schedule_and_weighting(phase_cfg: PhaseSettings) -> tuple["TimestepSchedule", str]:
    """A phase's timestep schedule and SDS weighting (phaseN.timesteps / .weighting)."""
    return phase_cfg.timesteps, phase_cfg.weighting


def four_views(phase_cfg: PhaseSettings) -> Cameras:
    """Front, right, back, left at the middle of the phase's camera ranges and resolution."""
    return phase_cfg.cameras.four_views(phase_cfg.resolution)


@dataclass(frozen=True)
class UnclipGuidanceConfig(GuidanceConfig):
    """What the Stable unCLIP losses (augmented SDS, CDS) share."""

    roles: ClassVar[frozenset[str]] = frozenset({"unclip", "imagebind"})  # C_m needs ImageBind
    # CFG scale, constant or [start, end] over the phase: score distillation's 100 (DreamFusion,
    # HiFA, threestudio; guidance/sources.py), not text-to-image's 7.5.
    guidance_scale: Ramp = setting((100.0, 100.0), lo=0.0)
    # Renders are encoded at min(this, the model's training size). 512 as threestudio
    # (and HiFA's code on it) encode for every Stable Diffusion, the 768² unCLIP included:
    # phases II/III render at 512², so 768² would only upsample them, and the encoder, the
    # UNet and the backward through both cost 2.25x (attention more) at 768².
    max_resolution: int = setting(512, lo=8, hi=4096)


@register_loss("aug_sds")
@dataclass(frozen=True)
class AugSDSConfig(UnclipGuidanceConfig):
    """XBind's augmented 2D SDS (Eq. 4-8) on Stable unCLIP conditioned on C_m."""

    image_weight: float = setting(0.0, lo=0.0)  # ω_img of the image-space term (HiFA); 0 = plain SDS
    # The image term's target x̂ through TAESD ("tiny": 1.3 instead of 22 TFLOP a step for
    # four 768² views) or the model's own VAE decoder ("vae", as HiFA does).
    image_decoder: Literal["tiny", "vae"] = "tiny"

    @property
    def decodes_with_taesd(self) -> bool:
        """The image term's target is decoded by TAESD (the "taesd" role)."""
        return self.image_weight > 0 and self.image_decoder == "tiny"

    def model_roles(self) -> set[str]:
        return set(self.roles) | ({"taesd"} if self.decodes_with_taesd else set())

    def paper_term(self, phase_cfg: PhaseSettings, cond: Conditioning, seed: int) -> Guidance:
        decoder = tiny_decoder(cond.store) if self.decodes_with_taesd else None
        return SDS(cond.unclip(self.max_resolution), *schedule_and_weighting(phase_cfg), self.image_weight, seed,
                   decoder, self.guidance_scale)

    def oracle_term(self, phase_cfg: PhaseSettings, oracle: "Denoiser", seed: int) -> Guidance:
        # SDS reads the oracle's conditional branch: the exact target (CFG, which makes up
        # for a learnt model's weak conditioning, would extrapolate past it)
        return SDS(oracle, *schedule_and_weighting(phase_cfg), self.image_weight, seed)


def inject_gradient(z: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Scalar whose gradient w.r.t. z is exactly grad / B: 0.5 ||z - sg(z - grad)||^2 / B."""
    target = (z - grad).detach()
    return 0.5 * ((z - target) ** 2).sum() / z.shape[0]


def sds_weight(alphas_cumprod: torch.Tensor, t: torch.Tensor, kind: str) -> torch.Tensor:
    """w(t) per sample [B]: "sds" = 1 - ᾱ (DreamFusion), "uniform" = 1, "fantasia" = √ᾱ(1-ᾱ)."""
    a = alphas_cumprod.to(t.device)[t]
    if kind == "sds":
        return 1 - a
    if kind == "uniform":
        return torch.ones_like(a)
    if kind == "fantasia":
        return a.sqrt() * (1 - a)
    raise ValueError(f"unknown SDS weighting {kind!r}: use sds, uniform or fantasia")


@dataclass(frozen=True)
class TimestepSchedule:
    """t in [t_min, t_max] (fractions of T; a preset's phaseN.timesteps), as threestudio's
    StableDiffusionGuidance draws it (stable_diffusion_guidance.py update_step / __call__):
    "random": uniform on the integers [int(t_min T), int(t_max T)], both ends included;
    "sqrt": HiFA's anneal, deterministic: t = int(T ((t_max - t_min)(1 - sqrt(step/N)) + t_min))
    for every view (threestudio's sqrt_anneal; HiFA's nerf/sd.py the same)."""

    t_min: float = setting(0.02, lo=0.0, hi=1.0)
    t_max: float = setting(0.98, lo=0.0, hi=1.0)
    anneal: Literal["random", "sqrt"] = "random"

    def check(self, path: str) -> None:
        if not self.t_min < self.t_max:
            raise ConfigError(f"{path}: t_min must be below t_max", f"{path}.t_min")

    def sample(self, batch: int, step: int, total: int, num_train: int, generator: torch.Generator) -> torch.Tensor:
        """-> t [batch] (long); "random" draws from the generator, "sqrt" draws nothing."""
        if self.anneal == "sqrt":
            progress = math.sqrt(min(step / max(total, 1), 1.0))
            t = int(num_train * ((self.t_max - self.t_min) * (1 - progress) + self.t_min))
            return torch.full((batch,), min(t, num_train - 1), dtype=torch.long)
        lo, hi = int(self.t_min * num_train), int(self.t_max * num_train)
        return torch.randint(lo, min(hi, num_train - 1) + 1, (batch,), generator=generator)


class SDS(OnBatch):
    """Score distillation: grad_z = w(t) (ε̂(z_t, t) - ε), injected through z = encode(x),
    x the render as the denoiser takes it (resized to its resolution). With image_weight
    ω_img > 0 it adds HiFA's image-space term, XBind Eq. 5 (written for x0) in ε form as
    threestudio implements it (stable_diffusion_guidance.py compute_grad_sds, use_img_loss):
    x̂ = decode((z_t - √(1-ᾱ) ε̂) / √ᾱ), grad_x = w(t) ω_img (√ᾱ/√(1-ᾱ)) (x - x̂), both at the
    denoiser's resolution; `decode` is the denoiser's own unless an image_decoder (z
    [B,C,h,w] -> [B,3,H,W] in [0,1], e.g. encoders.tiny_decoder) is given. guidance_scale:
    the CFG scale (a Ramp over the phase) the denoiser predicts at (its with_scale); None:
    the denoiser's own. Draws, in order: the encoder's sample, t, the noise."""

    def __init__(self, denoiser: Denoiser, schedule: TimestepSchedule, weighting: str,
                 image_weight: float, seed: int,
                 image_decoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 guidance_scale: tuple[float, float] | None = None) -> None:
        self.denoiser, self.schedule, self.weighting, self.image_weight = denoiser, schedule, weighting, image_weight
        self.guidance_scale = guidance_scale
        self.decode = image_decoder or denoiser.decode
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, frame: Frame, views: Views, step: int, total: int) -> dict[str, torch.Tensor]:
        d = self.denoiser
        if self.guidance_scale is not None:
            d = d.with_scale(ramp_at(self.guidance_scale, step, total))
        x = d.model_input(frame.image)
        z = d.encode(x, self.generator)
        b = z.shape[0]
        t = self.schedule.sample(b, step, total, d.alphas_cumprod.shape[0], self.generator).to(z.device)
        noise = torch.randn(z.shape, generator=self.generator).to(z)
        a = d.alphas_cumprod.to(z)[t].reshape(b, 1, 1, 1)
        with torch.no_grad():
            z_t = a.sqrt() * z + (1 - a).sqrt() * noise
            eps = d.predict_noise(z_t, t, views)
        w = sds_weight(d.alphas_cumprod, t, self.weighting).to(z).reshape(b, 1, 1, 1)
        losses = {"sds": inject_gradient(z, w * (eps - noise))}
        if self.image_weight > 0:
            with torch.no_grad():
                z_hat = (z_t - (1 - a).sqrt() * eps) / a.sqrt()
                x_hat = self.decode(z_hat).float()
            scale = self.image_weight * w * (a / (1 - a)).sqrt()
            losses["sds_image"] = inject_gradient(x, scale * (x.detach() - x_hat.to(x)))
        return losses
