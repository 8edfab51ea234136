"""The three optimisation phases of XBind (Alg. 1): NeRF -> DMTet geometry -> texture.

Each phase owns its parameters and optimiser, does one step at a time (so the runner can
report, checkpoint and cancel between steps), renders a preview, and round-trips its full
state (parameters, optimiser, RNG) through a dict for checkpoints.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import PipelineError
from ..geometry.surfaces import Surface
from ..geometry.fields import NeRFField, TextureField
from ..render.camera import orbit_cameras
from ..render.mesh_renderer import render_mesh
from ..render.raster import Rasterizer
from ..render.shading import Frame, Views, fixed_views, sample_views
from ..render.sizes import StepSizes, sizing
from ..render.volume import render_volume
from .guidance_terms import Term
from .losses import StepData, active_regularizers
from .optim import make_optimizer
from .seeds import seeded, stream
from .settings import Config, GeometryPhaseConfig, NeRFPhaseConfig, PhaseConfig, TexturePhaseConfig


@dataclass
class PhaseContext:
    raster: Rasterizer
    device: torch.device
    seed: int
    bound: float
    fused_grid: bool = True  # runtime.fused_grid: hash grids may take their Triton kernels (on CUDA)


def _views(cfg: PhaseConfig, gen: torch.Generator, device: torch.device) -> Views:
    return sample_views(cfg.cameras, cfg.batch, cfg.resolution, gen, cfg.shading, cfg.background).to(device)


def _on_device(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module on the device, copied only if it is not there already (the estimator's fake
    fields cannot be copied)."""
    if all(t.device == device for t in module.state_dict().values()):
        return module
    return module.to(device)


def _add_parts(name: str, weight: float, parts: dict[str, torch.Tensor], losses: dict[str, torch.Tensor]) -> None:
    """A term's weighted parts, reported under the preset's loss name (extra parts as name/part)."""
    for i, (key, value) in enumerate(parts.items()):
        label = name if i == 0 else f"{name}/{key}"
        losses[label] = losses.get(label, 0) + weight * value


class Phase:
    name = ""
    key = ""  # its section of the config
    provides: frozenset[str] = frozenset()  # what its steps compute for regularisers (losses.StepData)
    preview_shading = "albedo"

    def __init__(self, cfg: PhaseConfig, ctx: PhaseContext, terms: list[Term], provides: frozenset[str] = frozenset()
                 ) -> None:
        """provides: what this phase's steps compute beyond its class's (its surface's kind)."""
        self.cfg, self.ctx, self.terms = cfg, ctx, terms
        self.iterations = cfg.iterations
        self.generator = stream(ctx.seed, self.key, "views")  # the cameras and samples it draws
        self.sizes = StepSizes()  # the renders' data-dependent sizes, without a read a step
        self.regularizers = active_regularizers(cfg, self.key, set(self.provides | provides))
        self.optimizer: torch.optim.Optimizer | None = None

    def needs(self, what: str) -> bool:
        """Whether a regulariser reads `what` (e.g. the NeRF's per-sample normals)."""
        return any(what in r.needs for r in self.regularizers.values())

    def modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def frame(self, views: Views, geometry: bool = False) -> Frame:
        """Render the current representation (depth and normals too when `geometry`)."""
        raise NotImplementedError

    def shaded(self, views: Views) -> Views:
        """The views as this phase draws its representation: the terms' references are drawn
        through the same views, so like is compared with like."""
        return views

    def render(self, views: Views) -> tuple[torch.Tensor, torch.Tensor]:
        """-> image [B,H,W,3] in [0,1], opacity [B,H,W,1] of the current representation."""
        f = self.frame(views)
        return f.image, f.opacity

    def losses(self, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def step_losses(self, frame: Frame, views: Views, step: int, data: StepData) -> dict[str, torch.Tensor]:
        """The phase's terms on the rendered batch `frame` of `views`, or on the fixed views a
        term renders itself (SGC's and VPCSM's cameras, the anchors' known views), then its
        regularisers on what the step computed (`data`), each weighted as the preset says."""
        losses: dict[str, torch.Tensor] = {}
        for term in self.terms:
            g = term.guidance
            fixed = g.views(self.preview_shading, self.cfg.background)
            if fixed is None:
                parts = g(frame, views, step, self.iterations)
            else:
                fixed = self.shaded(fixed.to(self.ctx.device))
                parts = g(self.frame(fixed, geometry=g.needs_geometry), fixed, step, self.iterations)
            _add_parts(term.name, term.weight, parts, losses)
        for name, reg in self.regularizers.items():
            losses[name] = reg.weight * reg.compute(data)
        return losses

    @torch.no_grad()
    def preview(self, resolution: int = 128) -> torch.Tensor:
        views = fixed_views(orbit_cameras(15.0, 30.0, 2.5, 40.0, resolution), self.preview_shading)
        return self.render(views.to(self.ctx.device))[0][0]

    def step(self, step: int) -> dict[str, float]:
        draws = self._draw_state()
        self.sizes.discard()  # a step starts with no counts, whatever the last one ended with
        with sizing(self.sizes):
            losses = self.losses(step)
        # One transfer for every loss value and every count the renders met (each float()
        # would wait for the device again; render/sizes.py).
        values = self._read(losses, self.sizes.pending())
        if not self.sizes.settle(values[len(losses):]):  # a render outgrew its room: again,
            del losses  # with the same draws, its counts read where met (exact; rare)
            self._set_draw_state(draws)
            losses = self.losses(step)
            values = self._read(losses, [])
        values = dict(zip(losses, values))
        total = sum(losses.values())
        bad = sorted(k for k, v in values.items() if not math.isfinite(v))
        if bad:  # before backward: the parameters stay as the last step left them
            raise PipelineError(f"{self.name} phase, step {step + 1}: the loss {', '.join(bad)} is not finite",
                                f"lower {self.key}.lr or the weight of {bad[0]}, then run again "
                                "with --restart (resuming would repeat the same step)")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return values

    def _read(self, losses: dict[str, torch.Tensor], counts: list[torch.Tensor]) -> list[float]:
        if not losses:
            raise PipelineError(f"{self.name} phase has no active loss",
                                "give at least one loss a weight > 0 in the preset or overrides")
        parts = [v.detach().reshape(()).double() for v in losses.values()] + [c.double() for c in counts]
        return torch.stack(parts).tolist()  # float64: counts past 2^24 stay exact

    def _draw_state(self) -> list[torch.Tensor]:
        """The phase's and its guidance terms' random streams (CPU generators)."""
        return [g.get_state() for g in self._generators()]

    def _set_draw_state(self, states: list[torch.Tensor]) -> None:
        for g, s in zip(self._generators(), states):
            g.set_state(s)

    def _generators(self) -> list[torch.Generator]:
        return [self.generator] + [t.guidance.generator for t in self.terms if t.guidance.generator is not None]

    def state(self) -> dict:
        """Parameters, optimiser and every random stream (the phase's cameras, each guidance
        term's draws): a run resumed from it goes on exactly as an uninterrupted one."""
        return {"modules": {k: m.state_dict() for k, m in self.modules().items()},
                "optimizer": self.optimizer.state_dict(), "rng": self.generator.get_state(),
                "guidance_rng": {t.name: t.guidance.generator.get_state() for t in self.terms
                                 if t.guidance.generator is not None}}

    def load(self, state: dict) -> None:
        for k, m in self.modules().items():
            m.load_state_dict(state["modules"][k])
        self._load_progress(state)

    def _load_progress(self, state: dict) -> None:
        """The optimiser and the random streams of a state()."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["rng"])
        for t in self.terms:
            if t.name in state["guidance_rng"]:
                t.guidance.generator.set_state(state["guidance_rng"][t.name])


class NeRFPhase(Phase):
    """Phase I: hash-grid NeRF rendered by volume rendering."""

    name, key = "nerf", "phase1"
    provides = frozenset({"volume", "normals"})

    cfg: NeRFPhaseConfig

    def __init__(self, cfg: NeRFPhaseConfig, ctx: PhaseContext, terms: list[Term]) -> None:
        super().__init__(cfg, ctx, terms)
        # Density only where every view sees it: outside that ball a floater is never seen
        # whole, and the box's corners are seen by no view at all.
        region = min(cfg.cameras.framed_radius(), ctx.bound)
        with seeded(ctx.seed, self.key, "field"):
            field = NeRFField.from_config(cfg.field, ctx.bound, ctx.fused_grid, region)
        self.field = _on_device(field, ctx.device)
        self.optimizer = make_optimizer(cfg.optimizer, self.field.parameters(), cfg.lr)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"field": self.field}

    def losses(self, step: int) -> dict[str, torch.Tensor]:
        every = self.cfg.occupancy_every
        if step >= every and step % every == 0:
            self.field.update_occupancy(self.cfg.occupancy_threshold, self.generator)
        views = _views(self.cfg, self.generator, self.ctx.device)
        out = render_volume(self.field, views, self.cfg.samples, self.generator, self.ctx.bound, self.needs("normals"))
        return self.step_losses(Frame(out.image, out.opacity), views, step, StepData(volume=out))

    def frame(self, views: Views, geometry: bool = False) -> Frame:
        # Mid-point samples: no draw from the camera stream (previews must not shift it).
        out = render_volume(self.field, views, self.cfg.samples, None, self.ctx.bound, geometry)
        return Frame(out.image, out.opacity, out.depth, out.normal)


class GeometryPhase(Phase):
    """Phase II: a surface (geometry/surfaces.py: the DMTet, or stylize's offset input
    mesh) rendered as normal maps."""

    name, key = "geometry", "phase2"
    preview_shading = "normal"
    provides = frozenset({"mesh"})

    def __init__(self, cfg: GeometryPhaseConfig, ctx: PhaseContext, terms: list[Term], surface: Surface) -> None:
        super().__init__(cfg, ctx, terms, frozenset({surface.kind}))
        # The surface's mesh while a step runs: extracted once (marching tets), rendered by the
        # batch, the fixed-camera terms and the anchors alike.
        self._step_mesh: tuple[torch.Tensor, torch.Tensor] | None = None
        self._use(surface)

    def _use(self, surface: Surface) -> None:
        self.surface = surface.to(self.ctx.device)
        self.optimizer = make_optimizer(self.cfg.optimizer, list(surface.module().parameters()), self.cfg.lr)
        surface.prepare(edges=self.needs(surface.kind))

    def modules(self) -> dict[str, torch.nn.Module]:
        return {self.surface.key: self.surface.module()}

    def mesh(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.surface.mesh()

    def step(self, step: int) -> dict[str, float]:
        try:
            return super().step(step)
        finally:
            self._step_mesh = None  # the optimiser moved the surface

    def shaded(self, views: Views) -> Views:
        """Its surface's normals (DMTet: by face, geometry/surfaces.py); the oracle's target
        and the identity views are then drawn by face too. A reference drawn with normals
        interpolated across its creases (a box whose corners share vertices) shows rounded
        edges the faces can only answer by bulging: an edit whose target was its own input
        grew 4.2% of the diagonal out of its box in 200 steps (docs/quality.md)."""
        return views.with_normals(self.surface.normals)

    def losses(self, step: int) -> dict[str, torch.Tensor]:
        views = self.shaded(_views(self.cfg, self.generator, self.ctx.device))
        verts, faces = self._step_mesh = self.mesh()
        out = render_mesh(self.ctx.raster, verts, faces, views)
        data = StepData(mesh=(verts, faces), surface=self.surface)
        return self.step_losses(Frame(out.image, out.alpha), views, step, data)

    def frame(self, views: Views, geometry: bool = False) -> Frame:
        out = render_mesh(self.ctx.raster, *(self._step_mesh or self.mesh()), self.shaded(views))
        return Frame(out.image, out.alpha, out.depth, out.normal)

    def load(self, state: dict) -> None:
        self._use(self.surface.restored(state["modules"][self.surface.key]))
        self._load_progress(state)

    def state(self) -> dict:
        s = super().state()
        s["modules"][self.surface.key] = self.surface.state()
        return s


def phase3_field(texture: TextureField, cfg: Config, seed: int) -> TextureField:
    """Phase III's field; a PBR material (phase3.material "pbr") also learns roughness and
    metallic, starting from the preset's constants (export.roughness, export.metallic), its
    head initialised from the job's stream."""
    if cfg.phase3.material == "pbr":
        with seeded(seed, "phase3", "material"):
            texture.add_material(cfg.export.roughness, cfg.export.metallic)
    return texture


class TexturePhase(Phase):
    """Phase III: geometry frozen, a texture field queried at visible surface points."""

    name, key = "texture", "phase3"

    def __init__(self, cfg: TexturePhaseConfig, ctx: PhaseContext, terms: list[Term], verts: torch.Tensor,
                 faces: torch.Tensor, texture: TextureField) -> None:
        super().__init__(cfg, ctx, terms)
        self.verts, self.faces = verts.detach().to(ctx.device), faces.to(ctx.device)
        self.texture = _on_device(texture, ctx.device)
        self.optimizer = make_optimizer(cfg.optimizer, self.texture.parameters(), cfg.lr)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"texture": self.texture}

    def _material(self, xyz: torch.Tensor, extras: dict) -> torch.Tensor:
        return self.texture(xyz)

    def losses(self, step: int) -> dict[str, torch.Tensor]:
        views = _views(self.cfg, self.generator, self.ctx.device)
        return self.step_losses(self.frame(views), views, step, StepData())

    def frame(self, views: Views, geometry: bool = False) -> Frame:
        out = render_mesh(self.ctx.raster, self.verts, self.faces, views, self._material)
        return Frame(out.image, out.alpha, out.depth, out.normal)
