"""`python -m backend.perf.gpu_check --out DIR` (tools/gpu_check.sh): everything a session
with a lent GPU should measure, in one run of about 8 minutes on one H100/H200.

- bench (perf/bench.py, random weights at the papers' sizes) of draft and standard: the
  defaults (fused hash grid, networks replaying CUDA graphs), with the PyTorch grid, standard
  without the graphs, and standard compiled (runtime.compile): per phase s/it, peak memory,
  warm-up (capture / compile) time, host syncs a step;
- the first step's losses compiled and without graphs against the defaults (same seed, same
  random networks);
- a torch.profiler summary of one step per phase of standard (top kernels, per component);
- a smoke run of generate, stylize and edit through `python -m backend run` on the GPU;
- the estimator's counts for the eager runs (on this machine's CPUs, beside the benches),
  and from them a refit of perf/calibration.json on these measurements.

Writes DIR/gpu_check.json and DIR/gpu_check.txt (a short table); the refit calibration is
written over perf/calibration.json, the previous points kept under "previous". Each run is
a subprocess with its own time limit, so one failure is reported and the rest goes on. On a
machine without a CUDA GPU it says so and exits 0 without work.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {  # name -> (preset, overrides): what each bench run measures
    "draft": ("draft", {}),
    "draft-torchgrid": ("draft", {"runtime.fused_grid": False}),
    "standard": ("standard", {}),
    "standard-torchgrid": ("standard", {"runtime.fused_grid": False}),
    "standard-nographs": ("standard", {"runtime.cuda_graphs": False}),
    "standard-compiled": ("standard", {"runtime.compile": True}),
}
# What the estimator can count (everything but torch.compile's own kernels).
EAGER = ("draft", "draft-torchgrid", "standard", "standard-torchgrid", "standard-nographs")


def _python(args: list[str], timeout: int, env: dict | None = None) -> tuple[int, str, str]:
    try:
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env=env)
        return proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        return 124, exc.stdout or "", f"timed out after {timeout} s"


def _bench(preset: str, overrides: dict, timeout: int, profile: Path | None = None) -> dict:
    """bench in a subprocess: 3 timed steps a phase, or 1 under the profiler."""
    args = ["-m", "backend", "bench", "--preset", preset, "--overrides", json.dumps(overrides),
            "--iterations", "1" if profile else "3", *(["--profile", str(profile)] if profile else [])]
    t0 = time.perf_counter()
    rc, out, err = _python(args, timeout)
    wall = round(time.perf_counter() - t0, 1)
    if rc:
        return {"error": err.strip().splitlines()[-1] if err.strip() else f"exit {rc}", "wall_s": wall}
    return {**json.loads(out), "wall_s": wall}


def _estimate(preset: str, overrides: dict) -> subprocess.Popen:
    """The estimator's counts for a configuration, started in the background (CPU work)."""
    return subprocess.Popen([sys.executable, "-m", "backend", "bench", "--estimate", "--json", "--preset", preset,
                             "--overrides", json.dumps(overrides)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _smoke(out: Path, timeout: int) -> dict:
    """generate, stylize and edit through the job runner on the GPU (tiny models: the
    machine has no hub; the pipeline, renderers, kernels and export are the real ones)."""
    from ..eval.targets import write_target
    from ..job import MESH_MODES, MODES

    fast = {"phase1.iterations": 30, "phase2.iterations": 30, "phase3.iterations": 30, "export.texture_size": 256}
    mesh_job = write_target("ring", out / "smoke")
    results = {}
    for mode in MODES:
        job = {"version": 1, "mode": mode, "preset": "draft", "models": "tiny", "device": "cuda", "seed": 0,
               "overrides": fast, "prompt": {"text": "a red ceramic ring"}}
        if mode in MESH_MODES:
            job["mesh"] = str(mesh_job.parent / "ring.glb")
        path = out / "smoke" / f"{mode}_job.json"
        path.write_text(json.dumps(job))
        t0 = time.perf_counter()
        rc, _, err = _python(["-m", "backend", "run", str(path), "--out", str(out / "smoke" / mode)], timeout)
        results[mode] = {"ok": rc == 0 and (out / "smoke" / mode / "result.glb").is_file(),
                         "wall_s": round(time.perf_counter() - t0, 1),
                         **({} if rc == 0 else {"error": err.strip().splitlines()[-1] if err.strip() else f"exit {rc}"})}
    return results


def _top_kernels(profile: Path) -> dict:
    """The first rows of each phase's op table (bench --profile), sorted by device time."""
    tables = {}
    for txt in sorted(profile.glob("phase*.txt")):
        ops = txt.read_text().split("\nops\n", 1)[-1].splitlines()
        tables[txt.stem] = [line.rstrip() for line in ops[:14]]
    return tables


def refit(report: dict, estimates: dict) -> dict:
    """Calibration points from this run's eager measurements and the estimator's counts of
    the same configurations -> the new calibration.json content (the old points kept)."""
    from .estimate import CALIBRATION

    points = []
    for name in EAGER:
        measured, counted = report["bench"].get(name, {}), estimates.get(name, {})
        if "phases" not in measured or "phases" not in counted:
            continue
        for key, m in measured["phases"].items():
            c = counted["phases"][key]
            points.append({"preset": CONFIGS[name][0], "config": name, "phase": key, "s_per_it": m["s_per_it"],
                           "launches": c["launches"], "tflop": c["tflop"], "gb_moved": c["gb_moved"]})
    old = json.loads(CALIBRATION.read_text())
    return {"about": f"{report['device']} measurements of `python -m backend bench` (eager, fp16, random weights) "
                     f"made by backend/perf/gpu_check.py on {report['date']}, with the launches, FLOPs and bytes "
                     "`bench --estimate` counts for the same code and configuration. The time model is the "
                     "non-negative least-squares fit of s_per_it = launches * s_per_launch + flops / flop_per_s + "
                     "bytes / bytes_per_s to these points.",
            "device": report["device"], "points": points,
            "measured_peak_gb": {CONFIGS[n][0]: report["bench"][n].get("peak_mem_gb") for n in ("draft", "standard")
                                 if "phases" in report["bench"].get(n, {})},
            "previous": {k: old[k] for k in ("about", "device", "points") if k in old}}


def _table(report: dict) -> str:
    lines = [f"gpu_check on {report['device']}, {report['date']} (measured; s/it over 3 steps after a warm-up)", "",
             f"{'run':20} {'phase':7} {'s/it':>7} {'peak GB':>8} {'warm-up s':>10} {'syncs':>6}"]
    for name, r in report["bench"].items():
        if "phases" not in r:
            lines.append(f"{name:20} failed: {r.get('error')}")
            continue
        for key, p in r["phases"].items():
            lines.append(f"{name:20} {key:7} {p['s_per_it']:7.3f} {p['peak_mem_gb'] or 0:8.2f} {p['warmup_s']:10.1f} "
                         f"{p['syncs_per_it'] if p['syncs_per_it'] is not None else '-':>6}")
        lines.append(f"{name:20} {'total':7} {r['estimate_s']:7.0f} s for the preset's iterations")
    for name in ("compiled_vs_eager", "nographs_vs_graphs"):
        if report.get(name):
            lines += ["", f"{name.replace('_', ' ')}, first step's losses (max relative difference): "
                      + ", ".join(f"{k} {v:.2e}" for k, v in report[name].items())]
    lines += ["", "smoke: " + ", ".join(f"{m} {'ok' if r['ok'] else 'FAILED'} ({r['wall_s']} s)"
                                       for m, r in report.get("smoke", {}).items())]
    return "\n".join(lines)


def _loss_diff(eager: dict, compiled: dict) -> dict:
    out = {}
    for key, p in eager.get("phases", {}).items():
        other = compiled.get("phases", {}).get(key, {}).get("first_losses", {})
        rel = [abs(other[k] - v) / max(abs(v), 1e-12) for k, v in p["first_losses"].items() if k in other]
        if rel:
            out[key] = max(rel)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu_check", help="folder for gpu_check.json / .txt, the profile, the smoke run")
    ap.add_argument("--no-refit", action="store_true", help="leave perf/calibration.json as it is")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine; nothing measured (run it where a GPU is lent)")
        return 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"device": torch.cuda.get_device_name(0), "date": _dt.date.today().isoformat(),
                    "torch": torch.__version__, "bench": {}}
    estimates = {name: _estimate(*CONFIGS[name]) for name in EAGER}  # CPU work beside the GPU's
    for name, (preset, overrides) in CONFIGS.items():
        report["bench"][name] = _bench(preset, overrides, 150)
        print(f"gpu_check: {name}: {report['bench'][name].get('error') or report['bench'][name]['estimate_s']}",
              flush=True)
    report["compiled_vs_eager"] = _loss_diff(report["bench"]["standard"], report["bench"]["standard-compiled"])
    report["nographs_vs_graphs"] = _loss_diff(report["bench"]["standard"], report["bench"]["standard-nographs"])
    _bench("standard", {}, 150, profile=out / "profile")
    report["profile"] = _top_kernels(out / "profile")
    report["smoke"] = _smoke(out, 60)
    counted = {}
    for name, proc in estimates.items():
        try:
            stdout, _ = proc.communicate(timeout=300)
            counted[name] = json.loads(stdout) if proc.returncode == 0 else {}
        except (subprocess.TimeoutExpired, json.JSONDecodeError):
            proc.kill()
            counted[name] = {}
    report["estimates"] = {n: {k: p["est_s_per_it"] for k, p in c.get("phases", {}).items()} for n, c in counted.items()}
    calibration = refit(report, counted)
    report["calibration_points"] = len(calibration["points"])
    if not args.no_refit and calibration["points"]:
        from .estimate import CALIBRATION

        tmp = CALIBRATION.with_suffix(".tmp")
        tmp.write_text(json.dumps(calibration, indent=1) + "\n")
        tmp.replace(CALIBRATION)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "gpu_check.txt").write_text(_table(report) + "\n")
    print(_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
