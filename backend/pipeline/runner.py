"""Runs a resolved job through phases I-III and export, with progress events, periodic
and per-phase checkpoints (atomic, checksummed), resume from the last good checkpoint, and
cooperative cancellation between steps (and between the stages of the steps that have no
iterations: the DMTet surface, export)."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from ..atomic import remove_partials, write_atomic
from ..errors import Cancelled, OutOfGPUMemory, is_out_of_memory
from ..export.mesh_export import baked_mesh, build_textured_mesh, write_glb
from ..export.previews import to_png, write_previews
from ..geometry.decimate import coarse_stages, decimate_coarsely
from ..geometry.dmtet import DMTet, choose_threshold, dmtet_from_density, dmtet_from_mesh
from ..geometry.fields import TextureField
from ..geometry.mesh import Mesh
from ..geometry.pieces import decimated_object, keep_object
from ..geometry.source_mesh import SourceMesh, colored_samples
from ..geometry.surfaces import DMTetSurface, OffsetSurface
from ..guidance.ref_view import identity_views
from ..progress import Stages
from ..render.raster import Rasterizer
from .checkpoints import Checkpoints
from .guidance_terms import Term, build_terms
from .phases import GeometryPhase, NeRFPhase, Phase, TexturePhase, phase3_field
from .prepare import RunContext
from .seeds import seeded
from .settings import PHASES

Emit = Callable[[dict], None]


# (rasterizer, target mesh, result mesh, albedo or None) -> metrics: eval/oracle_report.py
Measure = Callable[[Rasterizer, Mesh, Mesh, Callable | None], dict]
# (exported file, target mesh in the file's frame) -> metrics: eval/oracle_report.file_report
MeasureFile = Callable[[Path, Mesh], dict]


class Runner:
    def __init__(self, run: RunContext, emit: Emit, should_cancel: Callable[[], bool] = lambda: False,
                 measure: Measure | None = None, measure_file: MeasureFile | None = None) -> None:
        """run: prepare()'s context. measure: oracle runs' held-out-view metrics after each
        phase, measure_file: theirs of the exported file on its own (the caller's, so the
        pipeline does not depend on the evaluation package)."""
        self.job, self.cfg, self.out = run.job, run.cfg, run.out
        self.emit, self.should_cancel = emit, should_cancel
        self.measure, self.measure_file = measure, measure_file
        self.ctx, self.raster, self.device, self.anchors = run.phase_ctx, run.raster, run.device, run.anchors
        self.source, self.target, self.cond, self.fingerprints = run.source, run.target, run.cond, run.fingerprints
        self.checkpoints = Checkpoints(self.out, self.log)
        self.metrics: dict[str, dict] = {}
        iters = [self.cfg.phase(p).iterations for p in PHASES]
        self.remaining_after = {p: sum(iters[i + 1:]) for i, p in enumerate(PHASES)}

    def _clean(self) -> None:
        """Before the first phase: interrupted writes removed, damaged checkpoints dropped
        (named in a warning), checkpoints of a job that has changed discarded, the metrics
        kept so far read back (measured again where they cannot be read)."""
        for stale in remove_partials(self.out):
            self.log(f"removed {stale.relative_to(self.out)} (a write that was interrupted)")
        self.checkpoints.verify()
        self._discard_stale()
        path = self.out / "metrics.json"
        if path.exists():
            try:
                self.metrics = json.loads(path.read_text())
            except (ValueError, OSError) as exc:
                self.log(f"warning: metrics.json is not used ({type(exc).__name__}): measured again")
                path.unlink()

    def _discard_stale(self) -> None:
        """Checkpoints of a job that has changed since (config, inputs, seed, ...): from the
        first phase that differs on, they are removed and those phases run again."""
        discarded = self.checkpoints.discard_changed(self.fingerprints)
        if discarded:
            key, changed = discarded
            self.log(f"{key}: the job changed since its checkpoint ({', '.join(changed)}): running {key} "
                     f"and the phases after it again")
            (self.out / "metrics.json").unlink(missing_ok=True)

    def log(self, message: str) -> None:
        self.emit({"type": "log", "message": message})

    def _terms(self, key: str) -> list[Term]:
        return build_terms(key, self.cfg.phase(key), self.job.guidance, self.raster, self.ctx.seed, self.log,
                           self.target, self.cond, self.anchors)

    def _run_phase(self, key: str, phase: Phase) -> None:
        fp, ckpt = self.fingerprints[key], self.checkpoints
        finished = ckpt.finished(key)
        if finished is not None:
            phase.load(finished)
            self.log(f"{key}: loaded from checkpoint")
            return
        start = 0
        progress = ckpt.progress(key)
        if progress is not None:
            start, state = progress
            phase.load(state)
            self.log(f"{key}: resuming at step {start}")
        every = self.cfg.progress
        t0, n = time.monotonic(), 0
        for step in range(start, phase.iterations):
            if self.should_cancel():
                ckpt.save_progress(key, step, phase.state(), fp)
                raise Cancelled(f"cancelled in {key} at step {step}")
            try:
                losses = phase.step(step)
            except (RuntimeError, MemoryError) as exc:  # CUDA's, the CPU allocator's, Python's
                if not is_out_of_memory(exc):
                    raise
                phase.optimizer.zero_grad(set_to_none=True)  # free what the failed step held
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                ckpt.save_progress(key, step, phase.state(), fp)
                which = "GPU memory" if self.device.type == "cuda" else "memory"
                raise OutOfGPUMemory(
                    f"out of {which} in {key} at step {step + 1} of {phase.iterations} (checkpoint kept)",
                    f"free {which} and re-run to resume at step {step + 1}, or lower {key}.batch or "
                    f"{key}.resolution, or use the draft preset") from exc
            n += 1
            rate = (time.monotonic() - t0) / n
            event = {"type": "progress", "phase": key, "step": step + 1, "total": phase.iterations,
                     "losses": losses, "eta_s": round(rate * (phase.iterations - step - 1 + self.remaining_after[key]), 1)}
            if (step + 1) % every.preview_every == 0 or step + 1 == phase.iterations:
                to_png(phase.preview(), self.out / "preview.png")
                event["preview"] = str(self.out / "preview.png")
            # Saved before it is reported: a step shown at a checkpoint boundary survives a kill.
            if (step + 1) % every.checkpoint_every == 0 and step + 1 < phase.iterations:
                ckpt.save_progress(key, step + 1, phase.state(), fp)
            self.emit(event)
        ckpt.finish(key, phase.state(), fp)

    def run(self) -> dict:
        self._clean()
        if self.source is not None:
            return self.run_from_mesh(self.source)
        p1 = NeRFPhase(self.cfg.phase1, self.ctx, self._terms("phase1"))
        self._run_phase("phase1", p1)
        p2 = self._geometry_phase(lambda: self._dmtet_from_nerf(p1))
        if "phase1" not in self.metrics:
            self._measure("phase1", Mesh(*p2.mesh()), p1.field.texture_field())
        self._run_phase("phase2", p2)
        verts, faces = p2.mesh()
        if "phase2" not in self.metrics:
            self._measure("phase2", Mesh(verts, faces), p1.field.texture_field())
        p3 = TexturePhase(self.cfg.phase3, self.ctx, self._terms("phase3"), verts, faces,
                          phase3_field(p1.field.texture_field(), self.cfg, self.ctx.seed))
        self._run_phase("phase3", p3)
        return self.export(p3)

    def run_from_mesh(self, src: SourceMesh) -> dict:
        """Stylize / edit: phases II and III start from the user's mesh and its colours."""
        for fix in src.fixes:
            self.log(f"input mesh: {fix}")
        mesh, scfg, mode = src.mesh.to(self.device), self.cfg.source, self.job.mode
        surface = OffsetSurface if mode == "stylize" else DMTetSurface  # phase II's
        if "input" not in self.metrics:
            self._measure("input", mesh)
        if any(self.cfg.phase(p).weight("identity") > 0 for p in PHASES):
            self.anchors["identity"] = {shading: identity_views(self.raster, mesh, scfg.identity_views,
                                                                scfg.identity_resolution, shading, surface.normals)
                                        for shading in ("albedo", "normal")}
        with seeded(self.ctx.seed, "source", "texture"):
            texture = TextureField.from_config(self.cfg.phase1.field, self.ctx.bound, self.ctx.fused_grid)
        texture = texture.to(self.device)
        samples = colored_samples(src.mesh, 1 << 17, self.ctx.seed)
        if samples is not None and scfg.texture_fit_steps > 0:
            mse = texture.fit(*samples, steps=scfg.texture_fit_steps, seed=self.ctx.seed)
            self.log(f"texture field fitted to the input's colours (MSE {mse:.4f})")
        cfg2 = self.cfg.phase2
        if surface is OffsetSurface:
            p2 = GeometryPhase(cfg2, self.ctx, self._terms("phase2"), OffsetSurface(mesh.verts, mesh.faces))
        else:
            p2 = self._geometry_phase(lambda: dmtet_from_mesh(mesh.verts, mesh.faces, cfg2.tet_res, self.ctx.bound,
                                                              scfg.edit_margin, cfg2.sdf_grid))
        self._run_phase("phase2", p2)
        verts, faces = p2.mesh()
        if "phase2" not in self.metrics:
            self._measure("phase2", Mesh(verts.detach(), faces), texture)
        p3 = TexturePhase(self.cfg.phase3, self.ctx, self._terms("phase3"), verts, faces,
                          phase3_field(texture, self.cfg, self.ctx.seed))
        self._run_phase("phase3", p3)
        keep_uvs = mode == "stylize" and scfg.keep_uvs and src.uv_valid
        return self.export(p3, src, src.mesh.uv if keep_uvs else None)

    def _geometry_phase(self, make: Callable[[], DMTet]) -> GeometryPhase:
        if self.checkpoints.has("phase2"):
            # The DMTet comes from its own checkpoint: skip deriving it again.
            return GeometryPhase(self.cfg.phase2, self.ctx, self._terms("phase2"),
                                 DMTetSurface(DMTet(1, [-1] * 3, [1] * 3)))
        dmtet = make()
        self.log(f"DMTet grid box {dmtet.lo.tolist()} .. {dmtet.hi.tolist()}")
        return GeometryPhase(self.cfg.phase2, self.ctx, self._terms("phase2"), DMTetSurface(dmtet))

    def _dmtet_from_nerf(self, p1: NeRFPhase) -> DMTet:
        cfg = self.cfg.phase2
        stages = Stages(self.emit, self.should_cancel, "phase2", cfg.iterations)  # before its step 1
        stages.start("the DMTet surface from phase I's density")
        threshold, why = choose_threshold(p1.field.density, cfg.density_threshold, self.ctx.bound)
        if why:
            self.log(why)
        return dmtet_from_density(p1.field.density, cfg.tet_res, threshold, self.ctx.bound, cfg.sdf_grid)

    def _measure(self, key: str, mesh: Mesh, albedo: torch.nn.Module | None = None) -> None:
        """Oracle runs only: held-out-view metrics after each phase, kept in metrics.json."""
        if self.target is None or self.measure is None:
            return
        with torch.no_grad():
            albedo_fn = None if albedo is None else albedo.to(self.device)
            self._record(key, self.measure(self.raster, self.target, mesh.to(self.device), albedo_fn))

    def _record(self, key: str, metrics: dict) -> None:
        self.metrics[key] = metrics
        write_atomic(self.out / "metrics.json", json.dumps(self.metrics, indent=2))
        self.log(f"{key} metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    def export(self, p3: TexturePhase, src: SourceMesh | None = None, uv: torch.Tensor | None = None) -> dict:
        """Cleanup, UVs, bake, GLB and previews. With a source mesh the result goes back to its
        frame; with `uv` (the user's, stylize) the texture is baked into them, topology kept."""
        stages = Stages(self.emit, self.should_cancel, "export", 3)  # the textured mesh, result.glb, previews
        ecfg = self.cfg.export
        material = lambda x: p3.texture(x.to(self.device))  # noqa: E731
        with torch.no_grad():
            verts, faces = p3.verts.cpu(), p3.faces.cpu()
            if uv is not None:
                stages.start("baking the texture into the input's UVs")
                mesh = baked_mesh(self.raster, verts, faces, uv.cpu(), material, ecfg.texture_size)
            else:
                # The object only (geometry/pieces.py), before the face budget and the texture are spent
                parts = 1 if src is None else src.parts
                verts, faces, removal = keep_object(verts, faces, ecfg.pieces, parts)
                if removal.share > 0:
                    self.log(str(removal))
                stages.add(coarse_stages(faces.shape[0], ecfg.max_faces))
                verts, faces, _ = decimate_coarsely(verts, faces, ecfg.max_faces, stages.start)
                stages.start("cleanup, UV unwrapping and baking")
                verts, faces, crumbs = decimated_object(verts, faces, ecfg.pieces, ecfg.max_faces, parts)
                if crumbs.share > 0:
                    self.log(f"after decimation: {crumbs}")
                mesh = build_textured_mesh(self.raster, verts, faces, material, ecfg)
        if src is not None:
            if self.target is not None:
                self._measure("final", mesh)  # in the unit frame, like the target
            mesh = replace(mesh, verts=src.norm.undo(mesh.verts))
        glb = self.out / "result.glb"
        stages.start("writing result.glb")
        write_glb(mesh, glb, ecfg.crease_angle, ecfg.metallic, ecfg.roughness)
        stages.start("previews")
        write_previews(self.raster, mesh.to(self.device), self.out, ecfg.preview_resolution)
        result = {"glb": str(glb), "preview": str(self.out / "preview.png"),
                  "turntable": str(self.out / "turntable.png"),
                  "faces": int(mesh.faces.shape[0]), "texture_size": int(mesh.texture.shape[0])}
        if self.target is not None:
            if src is None:
                self._measure("final", mesh)
            if self.measure_file is not None:  # the target in the file's frame: the input's for stylize / edit
                target = self.target.to("cpu")
                self._record("file", self.measure_file(glb, target if src is None else
                                                       replace(target, verts=src.norm.undo(target.verts))))
            result["metrics"] = self.metrics
        stages.finish()
        return result
