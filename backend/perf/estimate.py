"""`python -m backend bench --estimate`: per-phase peak GPU memory, FLOPs, kernel launches,
bytes moved and an estimated time, on any machine (no GPU needed).

One training step of each phase runs through the real code (JobConditioning and the loss factory, the phases,
Phase.step) with the papers' networks at real size as fake tensors in fp16 (perf/networks.py)
and the renderers real where they are cheap (DMTet extraction, rasterisation: data
dependent) or fake with worst-case masks where they are not (the NeRF: see tracker.py).
Every op passes through a Tracker, which counts what the GPU would hold:

    peak = weights on the device (what parking leaves there, per phase)
         + the phase's parameters, gradients and optimiser state
         + the step's peak of live tensors, by the component that made them
         + the CUDA graphs' private pools (models/graphs.py: what a graphed network's
           calls allocate stays reserved for it; not in the live tensors).

The time is an estimate: launches, FLOPs and bytes weighed by constants fitted to the last
H100 measurements (perf/calibration.json); it says so in its output.
"""
from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ..models.store import ModelStore
from .harness import bench_job, bench_phases, component_labels
from .tracker import Tracker

GB = 2 ** 30
CALIBRATION = Path(__file__).with_name("calibration.json")


def _nbytes(tensors: Any) -> int:
    return sum(t.nbytes for t in tensors if isinstance(t, torch.Tensor))


def _features(launches: float, flops: float, bytes_moved: float) -> list[float]:
    return [launches, flops, bytes_moved]


@lru_cache(maxsize=1)
def time_model() -> tuple[float, float, float]:
    """(s per launch, s per FLOP, s per byte): non-negative least squares on the measured
    points of calibration.json (columns scaled so the solver sees numbers near 1)."""
    from scipy.optimize import nnls

    points = json.loads(CALIBRATION.read_text())["points"]
    a = np.array([_features(p["launches"], p["tflop"] * 1e12, p["gb_moved"] * GB) for p in points])
    y = np.array([p["s_per_it"] for p in points])
    scale = a.max(axis=0)
    coef, _ = nnls(a / scale, y)
    return tuple(float(c) for c in coef / scale)


def seconds_per_it(launches: float, flops: float, bytes_moved: float) -> float:
    """Estimated seconds of one step on the calibration device (an H100)."""
    return float(np.dot(_features(launches, flops, bytes_moved), time_model()))


def measure_step(phase: Any, store: ModelStore, step: int = 1) -> dict:
    """One Phase.step under a Tracker -> the phase's memory, work and time figures."""
    tracker = Tracker()
    tracker.label_modules(component_labels(store))
    tracker.label_modules({"representation": m for m in phase.modules().values()})
    with tracker:
        phase.step(step)
    r = tracker.report()
    params = _nbytes(p for m in phase.modules().values() for p in m.parameters())
    grads = _nbytes(p.grad for m in phase.modules().values() for p in m.parameters())
    opt_state = _nbytes(v for st in phase.optimizer.state.values() for v in st.values())
    resident = {"weights": store.resident_bytes(), "parameters": params, "gradients": grads,
                "optimizer": opt_state, "CUDA graph pools": r["graph_pool_bytes"]}
    breakdown = {**resident, **{f"live: {k}": v for k, v in sorted(r["peak_by_label"].items(), key=lambda kv: -kv[1])}}
    return {"peak_gb": round((sum(resident.values()) + r["peak_bytes"]) / GB, 2),
            "breakdown_gb": {k: round(v / GB, 3) for k, v in breakdown.items()},
            "tflop": round(r["flops"] / 1e12, 2), "launches": r["launches"], "syncs": r["syncs"],
            "graph_syncs": r["graph_syncs"], "syncs_once_a_phase": r["syncs_once"], "sync_sites": r["sync_sites"],
            "graph_pools_gb": {k: round(v / GB, 3) for k, v in r["graph_pools"].items()},
            "gb_moved": round(r["bytes_moved"] / GB, 1),
            "launches_by_label": r["launches_by_label"],
            "tflop_by_label": {k: round(v / 1e12, 3) for k, v in r["flops_by_label"].items()},
            "gb_moved_by_label": {k: round(v / GB, 2) for k, v in r["bytes_by_label"].items()},
            "est_s_per_it": round(seconds_per_it(r["launches"], r["flops"], r["bytes_moved"]), 4)}


def estimate(preset: str = "standard", overrides: dict | None = None, size: str = "full") -> dict:
    """-> {"preset", "size", "phases": {phaseN: figures}, "peak_gb", "estimate_s", "note"}."""
    with tempfile.TemporaryDirectory(prefix="conjure-estimate-") as scratch:
        return _estimate(preset, overrides, size, Path(scratch))


def _estimate(preset: str, overrides: dict | None, size: str, scratch: Path) -> dict:
    from ..pipeline.config import resolve
    from ..pipeline.job_conditioning import JobConditioning
    from ..pipeline.phases import PhaseContext
    from ..render.raster import TorchRasterizer
    from .networks import RandomStore

    cfg = resolve(preset, overrides or {})
    cpu = torch.device("cpu")
    fake = FakeTensorMode(allow_non_fake_inputs=True) if size == "full" else None
    # The networks as CUDA would run them: graphed unless compiled (prepare.networks_graphed).
    graphed = cfg.runtime.cuda_graphs and not cfg.runtime.compile
    if fake is not None:
        store: ModelStore = RandomStore(cpu, scratch, fake, graph_networks=graphed)
    else:
        from ..models.tiny import build_tiny

        store = ModelStore(str(build_tiny(scratch / "tiny")), device=cpu, graph_networks=graphed)
    cond = JobConditioning(bench_job(scratch), store, lambda m: None)
    ctx = PhaseContext(TorchRasterizer(dense=True), cpu, 0, cfg.render.bound, fused_grid=cfg.runtime.fused_grid)
    phases: dict[str, dict] = {}

    builds: dict[str, Tracker] = {}
    resident_before: dict[str, int] = {}

    def build_mode(key: str) -> Tracker:  # conditioning made once per phase: worst-case shim, own peak
        # What is on the device when the build starts, plus what the build allocates (the
        # weights it loads included): counting the weights resident after the step instead
        # would count the newly loaded ones twice.
        resident_before[key] = store.resident_bytes()
        builds[key] = Tracker()
        return builds[key]

    for key, phase in bench_phases(cfg, ctx, cond, fake, build_mode):
        phases[key] = measure_step(phase, store)
        phases[key]["conditioning_peak_gb"] = round((builds[key].peak + resident_before[key]) / GB, 2)
    for key, figures in phases.items():
        figures["iterations"] = cfg.phase(key).iterations
    return {"preset": preset, "size": size, "overrides": overrides or {}, "phases": phases,
            "peak_gb": max(max(p["peak_gb"], p["conditioning_peak_gb"]) for p in phases.values()),
            "estimate_s": round(sum(p["est_s_per_it"] * p["iterations"] for p in phases.values()), 1),
            "note": "estimate: memory counted op by op (fake networks, real renderers); time from a model "
                    "calibrated on H100 measurements (perf/calibration.json), not measured"}


def format_estimate(report: dict) -> str:
    """The estimate as a table for people: per phase the peak and what makes it up."""
    lines = [f"Estimate for preset {report['preset']!r} ({report['size']} networks) on a CUDA GPU; "
             f"{report['note']}.", ""]
    lines.append(f"{'phase':8} {'peak GB':>8} {'TFLOP':>7} {'launches':>9} {'syncs':>6} {'GB moved':>9} "
                 f"{'est s/it':>9} {'its':>6} {'est s':>8}")
    for key, p in report["phases"].items():
        lines.append(f"{key:8} {p['peak_gb']:8.2f} {p['tflop']:7.1f} {p['launches']:9d} {p['syncs']:6d} "
                     f"{p['gb_moved']:9.1f} {p['est_s_per_it']:9.3f} {p['iterations']:6d} "
                     f"{p['est_s_per_it'] * p['iterations']:8.0f}")
    lines.append(f"{'total':8} {report['peak_gb']:8.2f} {'':>7} {'':>9} {'':>6} {'':>9} {'':>9} {'':>6} "
                 f"{report['estimate_s']:8.0f}")
    for key, p in report["phases"].items():
        lines += ["", f"{key} peak, GB:"] + [f"  {name:32} {gb:8.3f}" for name, gb in p["breakdown_gb"].items()
                                             if gb >= 0.001]
    return "\n".join(lines)


def record(report: dict) -> None:
    """Keep a full-size estimate of a preset (no overrides) in the table pipeline/memory_budget.py reads."""
    from ..pipeline.memory_budget import TABLE, recorded

    if report["size"] != "full" or report.get("overrides"):
        raise ValueError("only full-size estimates of a preset without overrides are recorded")
    table = recorded()
    table[report["preset"]] = {"peak_gb": report["peak_gb"], "estimate_s": report["estimate_s"],
                               "phases": {k: p["peak_gb"] for k, p in report["phases"].items()}}
    tmp = TABLE.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    tmp.replace(TABLE)
