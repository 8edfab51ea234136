"""What bench (measured, on a GPU) and estimate (counted, anywhere) both run: the job they
condition on, the three phases built one after the other, and names for the networks'
parts. The two entry points and their CLI (perf/cli.py) build on this; it imports neither."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from ..job import Job, Prompt
from ..models.store import ModelStore


def _reference(path: Path) -> Path:
    img = np.zeros((256, 256, 4), np.uint8)  # alpha given: no segmenter needed
    img[64:192, 80:176] = [180, 60, 40, 255]
    Image.fromarray(img).save(path)
    return path


def bench_job(scratch: Path) -> Job:
    """The job both bench and estimate run: a text prompt and a reference image with alpha."""
    return Job(prompt=Prompt(text="a wooden chair", images=(str(_reference(scratch / "ref.png")),)))


def bench_phases(cfg: Any, ctx: Any, cond: Any, field_mode: Any = None,
                 build_mode: Callable[[str], Any] | None = None) -> Iterator[tuple[str, Any]]:
    """The three phases as bench and estimate run them, each built when the previous one is
    done: phase II starts from a sphere (a known surface), phase III textures its mesh.
    field_mode: a context (the estimator's fake mode) in which the NeRF is built;
    build_mode(phase key): a context in which that phase's guidance is built."""
    from ..geometry.dmtet import dmtet_from_density
    from ..geometry.fields import TextureField
    from ..geometry.surfaces import DMTetSurface
    from ..pipeline.guidance_terms import build_terms
    from ..pipeline.phases import GeometryPhase, NeRFPhase, TexturePhase, phase3_field

    anchors = {"ref_view": {None: cond.ref_view()}}

    def terms(key: str) -> list:
        with build_mode(key) if build_mode else nullcontext():
            return build_terms(key, cfg.phase(key), "paper", ctx.raster, 0, lambda m: None, cond=cond, anchors=anchors)

    t1 = terms("phase1")
    with field_mode or nullcontext():
        p1 = NeRFPhase(cfg.phase1, ctx, t1)
    yield "phase1", p1
    sphere = lambda x: 20.0 * (x.norm(dim=-1) < 0.5).float()  # noqa: E731
    dmtet = dmtet_from_density(sphere, cfg.phase2.tet_res, 10.0, cfg.render.bound, cfg.phase2.sdf_grid)
    dmtet.whole_grid = getattr(ctx.raster, "dense", None)  # the estimator's dense rasterizer stands for a GPU
    p2 = GeometryPhase(cfg.phase2, ctx, terms("phase2"), DMTetSurface(dmtet))
    yield "phase2", p2
    verts, faces = (t.detach() for t in p2.mesh())
    with field_mode or nullcontext():  # a fresh field of the NeRF's shape: fake tensors must not be deep-copied
        texture = phase3_field(TextureField.from_config(cfg.phase1.field, cfg.render.bound, ctx.fused_grid), cfg, 0)
    yield "phase3", TexturePhase(cfg.phase3, ctx, terms("phase3"), verts, faces, texture)


def component_labels(store: ModelStore) -> dict[str, torch.nn.Module]:
    """Names for the loaded networks' parts (a VAE's encoder and decoder apart)."""
    out: dict[str, torch.nn.Module] = {}
    for role, obj in store._loaded.items():
        items = {"": obj} if isinstance(obj, torch.nn.Module) else \
            {k: v for k, v in vars(obj).items() if isinstance(v, torch.nn.Module)} if hasattr(obj, "__dict__") else {}
        for part, module in items.items():
            name = f"{role}.{part}" if part else role
            if hasattr(module, "encoder") and hasattr(module, "decoder"):
                out[f"{name}.encoder"], out[f"{name}.decoder"] = module.encoder, module.decoder
            else:
                out[name] = module
    return out
