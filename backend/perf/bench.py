"""`python -m backend bench`: seconds per iteration and peak memory of each phase of a
preset, with the paper's networks at their real sizes and random weights (SPEC Sec. 10).

The models come from RandomStore (perf/networks.py): the store's and loaders' own code paths
(JobConditioning and the loss factory, the denoisers, the phases), with each part built from its published
configuration instead of read from disk. `--size tiny` uses the tiny models instead (a
quick check of the bench). `--estimate` (perf/estimate.py) needs no GPU; both run the
phases of perf/harness.py.
"""
from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from ..models.store import ModelStore
from ..models.tiny import build_tiny
from .harness import bench_job, bench_phases, component_labels
from .networks import RandomStore

@contextmanager
def profiled(out: str | None, key: str, store: ModelStore, device: torch.device) -> Iterator[None]:
    """With out: a torch.profiler Chrome trace of the block (out/KEY.json) and a table per
    network component and per op (out/KEY.txt: calls, time, memory)."""
    if not out:
        yield
        return
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
    from torch.profiler import ProfilerActivity, profile, record_function

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
    from ..pipeline.prepare import networks_compiled, networks_graphed, resolve_device
    from ..render.raster import make_rasterizer

    dev = resolve_device(device)
    cfg = resolve(preset, overrides or {})
    torch.manual_seed(0)  # the same random networks in every bench process (compiled against eager)
    speed = dict(compile_networks=networks_compiled(cfg, dev), graph_networks=networks_graphed(cfg, dev))
    store = (RandomStore(dev, scratch, **speed) if size == "full" else
             ModelStore(str(build_tiny(scratch / "tiny")), device=dev, **speed))
    cond = JobConditioning(bench_job(scratch), store, lambda m: None)
    raster = make_rasterizer(cfg.render.rasterizer, dev)
    ctx = PhaseContext(raster, dev, 0, cfg.render.bound, fused_grid=cfg.runtime.fused_grid)
    report: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "preset": preset,
                    "size": size, "phases": {}}

    def run(key: str, phase) -> None:  # noqa: ANN001
        t0 = time.perf_counter()
        first = phase.step(0)  # warm-up: lazy loads, kernels, allocator, compiling, graph capture
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
                                 "iterations": cfg.phase(key).iterations, "warmup_s": round(warmup, 2),
                                 "first_losses": first, "syncs_per_it": host_syncs(phase, iterations + 1, dev)}

    for key, phase in bench_phases(cfg, ctx, cond):
        run(key, phase)
    report["estimate_s"] = round(sum(p["s_per_it"] * p["iterations"] for p in report["phases"].values()), 1)
    if dev.type == "cuda":
        report["peak_mem_gb"] = max(p["peak_mem_gb"] for p in report["phases"].values())
    return report
