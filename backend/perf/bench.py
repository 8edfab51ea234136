"""`python -m backend bench`: seconds per iteration and peak memory of each phase of a
preset, with the paper's networks at their real sizes and random weights (SPEC Sec. 10).

The models come from RandomStore (perf/networks.py): the registry's own code paths
(JobConditioning and the loss factory, the denoisers, the phases), with each part built from its published
configuration instead of read from disk. `--size tiny` uses the tiny models instead (a
quick check of the bench). `--estimate` (perf/estimate.py) needs no GPU.
"""
from __future__ import annotations

import json
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from ..models.registry import ModelStore
from ..models.tiny import build_tiny
from .networks import RandomStore

def _reference(path: Path) -> Path:
    img = np.zeros((256, 256, 4), np.uint8)  # alpha given: no segmenter needed
    img[64:192, 80:176] = [180, 60, 40, 255]
    Image.fromarray(img).save(path)
    return path


def bench_job(scratch: Path) -> dict:
    """The job both bench and estimate run: a text prompt and a reference image with alpha."""
    return {"prompt": {"text": "a wooden chair", "images": [str(_reference(scratch / "ref.png"))], "weights": {}},
            "style_image": None}


def bench_phases(cfg: dict, ctx: Any, cond: Any, field_mode: Any = None,
                 build_mode: Callable[[str], Any] | None = None) -> Iterator[tuple[str, Any]]:
    """The three phases as bench and estimate run them, each built when the previous one is
    done: phase II starts from a sphere (a known surface), phase III textures its mesh.
    field_mode: a context (the estimator's fake mode) in which the NeRF is built;
    build_mode(phase key): a context in which that phase's guidance is built."""
    from ..geometry.dmtet import dmtet_from_density
    from ..geometry.fields import TextureField
    from ..pipeline.guidance_terms import build_terms
    from ..pipeline.phases import GeometryPhase, NeRFPhase, TexturePhase, phase3_field

    def terms(key: str) -> list:
        with build_mode(key) if build_mode else nullcontext():
            return build_terms(cfg[key], "paper", ctx.raster, 0, lambda m: None, cond=cond)

    t1 = terms("phase1")
    with field_mode or nullcontext():
        p1 = NeRFPhase(cfg["phase1"], ctx, t1)
    yield "phase1", p1
    sphere = lambda x: 20.0 * (x.norm(dim=-1) < 0.5).float()  # noqa: E731
    p2 = GeometryPhase(cfg["phase2"], ctx, terms("phase2"), dmtet_from_density(
        sphere, cfg["phase2"]["tet_res"], 10.0, cfg["render"]["bound"], cfg["phase2"]["sdf_grid"]))
    yield "phase2", p2
    verts, faces = (t.detach() for t in p2.mesh())
    with field_mode or nullcontext():  # a fresh field of the NeRF's shape: fake tensors must not be deep-copied
        texture = phase3_field(TextureField.from_config(cfg["phase1"]["field"], cfg["render"]["bound"],
                                                        ctx.fused_grid), cfg)
    yield "phase3", TexturePhase(cfg["phase3"], ctx, terms("phase3"), verts, faces, texture)


@contextmanager
def profiled(out: str | None, key: str, store: ModelStore, device: torch.device) -> Iterator[None]:
    """With out: a torch.profiler Chrome trace of the block (out/KEY.json) and a table per
    network component and per op (out/KEY.txt: calls, time, memory)."""
    if not out:
        yield
        return
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
    from torch.profiler import ProfilerActivity, profile, record_function

    from .estimate import component_labels

    names = {id(m): name for name, m in component_labels(store).items()}
    open_ranges: list = []

    def pre(module: torch.nn.Module, args: Any) -> None:
        if id(module) in names:
            open_ranges.append(record_function(f"component:{names[id(module)]}"))
            open_ranges[-1].__enter__()

    def post(module: torch.nn.Module, args: Any, result: Any) -> None:
        if id(module) in names and open_ranges:
            open_ranges.pop().__exit__(None, None, None)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    hooks = [register_module_forward_pre_hook(pre), register_module_forward_hook(post, always_call=True)]
    try:
        with profile(activities=activities, profile_memory=True, record_shapes=True) as prof:
            yield
    finally:
        for h in hooks:
            h.remove()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(folder / f"{key}.json"))
    events = prof.key_averages()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    comps = [e for e in events if e.key.startswith("component:")]
    table = "\n".join(f"{e.key[10:]:40} calls {e.count:5d}  cpu {e.cpu_time_total / 1e3:9.1f} ms  "
                      f"device {getattr(e, 'device_time_total', 0) / 1e3:9.1f} ms  "
                      f"mem {getattr(e, 'device_memory_usage', 0) / 2**20:9.1f} MB"
                      for e in sorted(comps, key=lambda e: -e.cpu_time_total))
    ops = events.table(sort_by=sort, row_limit=40)
    (folder / f"{key}.txt").write_text(f"components (whole forward of each, all calls)\n{table}\n\nops\n{ops}\n")


def host_syncs(phase: Any, step: int, device: torch.device) -> int | None:
    """Host syncs in one more step on CUDA, counted by torch's sync debug mode (one warning
    each); None elsewhere."""
    if device.type != "cuda":
        return None
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            phase.step(step)
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def bench(preset: str = "standard", device: str = "auto", size: str = "full", iterations: int = 5,
          overrides: dict | None = None, profile: str | None = None) -> dict:
    """-> {phase: {s_per_it, peak_mem_gb, iterations, warmup_s, first_losses, syncs_per_it}, estimate_s,
    device}; profile: a folder for traces and component tables (see profiled)."""
    with tempfile.TemporaryDirectory(prefix="conjure-bench-") as scratch:
        return _bench(preset, device, size, iterations, overrides, profile, Path(scratch))


def _bench(preset: str, device: str, size: str, iterations: int, overrides: dict | None, profile: str | None,
           scratch: Path) -> dict:
    from ..pipeline.config import resolve
    from ..pipeline.job_conditioning import JobConditioning
    from ..pipeline.phases import PhaseContext
    from ..pipeline.runner import networks_compiled, resolve_device
    from ..render.raster import make_rasterizer

    dev = resolve_device(device)
    cfg = resolve(preset, overrides or {})
    torch.manual_seed(0)  # the same random networks in every bench process (compiled against eager)
    compiled = networks_compiled(cfg, dev)
    store = (RandomStore(dev, scratch, compile_networks=compiled) if size == "full" else
             ModelStore(str(build_tiny(scratch / "tiny")), device=dev, compile_networks=compiled))
    cond = JobConditioning(bench_job(scratch), store, lambda m: None)
    raster = make_rasterizer(cfg["render"]["rasterizer"], dev)
    ctx = PhaseContext(raster, dev, 0, cfg["render"]["bound"], cond.ref_view(), fused_grid=cfg["runtime"]["fused_grid"])
    report: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "preset": preset,
                    "size": size, "phases": {}}

    def run(key: str, phase) -> None:  # noqa: ANN001
        t0 = time.perf_counter()
        first = phase.step(0)  # warm-up: lazy loads, kernels, allocator, compiling (runtime.compile)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        warmup = time.perf_counter() - t0
        with profiled(profile, key, store, dev):
            t0 = time.perf_counter()
            for i in range(1, iterations + 1):
                phase.step(i)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t0) / iterations
        peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
        report["phases"][key] = {"s_per_it": round(dt, 4), "peak_mem_gb": None if peak is None else round(peak, 2),
                                 "iterations": int(cfg[key]["iterations"]), "warmup_s": round(warmup, 2),
                                 "first_losses": first, "syncs_per_it": host_syncs(phase, iterations + 1, dev)}

    for key, phase in bench_phases(cfg, ctx, cond):
        run(key, phase)
    report["estimate_s"] = round(sum(p["s_per_it"] * p["iterations"] for p in report["phases"].values()), 1)
    if dev.type == "cuda":
        report["peak_mem_gb"] = max(p["peak_mem_gb"] for p in report["phases"].values())
    return report


def main(args: Any) -> int:
    overrides = json.loads(args.overrides) if args.overrides else {}
    if args.estimate:
        from .estimate import estimate, format_estimate, record

        report = estimate(args.preset, overrides, args.size)
        if args.record:
            record(report)
        print(json.dumps(report, indent=2) if args.json else format_estimate(report))
        return 0
    print(json.dumps(bench(args.preset, args.device, args.size, args.iterations, overrides, args.profile), indent=2))
    return 0
