"""`python -m backend.eval.suite --out DIR`: oracle runs of every target (eval/targets.py)
and the stylize / edit end-to-end cases at each seed, one at a time, then one table of what
each exported file is on its own (eval/oracle_report.file_report) beside the job-frame
figures, against the bars of a clean file (issue 37).

Each case runs in DIR/CASE_sSEED (job, inputs, out/). A case whose out/metrics.json is
complete is read, not run again, so an interrupted suite goes on where it stopped; one
whose run predates the file's figures is measured from its out/result.glb. `--overrides`
(a job's overrides, JSON) measures a change of preset on every case before it is made: give
it a DIR of its own.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ..geometry.mesh import Mesh, load_mesh, normalized
from ..job import Job, read_job
from .oracle_report import BOX_MARGIN, OWN_BOX_CHAMFER, file_report
from .targets import MODE_OVERRIDES, TARGETS, write_mode_job, write_target

MODES = tuple(MODE_OVERRIDES)


def _job_path(case: str, folder: Path, preset: str, seed: int, overrides: dict | None = None) -> Path:
    overrides = {"progress.preview_every": 1_000_000, **(overrides or {})}
    if case in MODES:
        return write_mode_job(case, folder, overrides, seed)
    return write_target(case, folder, preset, overrides, seed)


def file_frame_target(job: Job) -> Mesh:
    """The oracle's target in the frame of the job's exported file: the unit frame for
    generate (pipeline/prepare.py normalises it), the input's own frame for stylize and edit
    (their targets are drawn in it)."""
    assert job.oracle is not None, "an oracle job"
    target = load_mesh(job.oracle.target_mesh)
    return target if job.mode != "generate" else normalized(target)[0]


def run_case(case: str, seed: int, out: Path, preset: str = "draft", overrides: dict | None = None) -> dict:
    """metrics.json of one case, running it (`python -m backend run`, its output in
    DIR/CASE_sSEED/log.txt) when it has not finished; overrides: added to its job's."""
    folder = out / f"{case}_s{seed}"
    metrics_path = folder / "out" / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    if "final" not in metrics or not (folder / "out" / "result.glb").exists():
        job = _job_path(case, folder, preset, seed, overrides)
        with (folder / "log.txt").open("a") as log:
            done = subprocess.run([sys.executable, "-m", "backend", "run", str(job), "--out", str(folder / "out")],
                                  stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise SystemExit(f"{case} seed {seed} failed: see {folder / 'log.txt'}")
        metrics = json.loads(metrics_path.read_text())
    if "open_edges" not in metrics.get("file", {}):  # measured before the file's figures (or its watertightness)
        job = read_job(json.loads((folder / "job.json").read_text()), folder)
        metrics["file"] = file_report(folder / "out" / "result.glb", file_frame_target(job))
    return metrics


def verdict(metrics: dict) -> list[str]:
    """The bars a case misses (empty: a clean file)."""
    f, final = metrics["file"], metrics["final"]
    misses = []
    if f["small_pieces"]:
        misses.append(f"{f['small_pieces']} pieces under 1% of the area")
    if f["outside_box"] > BOX_MARGIN:
        misses.append(f"surface {f['outside_box']:.1%} of the diagonal outside the target's box")
    if abs(f["chamfer_own_box"] - final["chamfer_rel"]) > OWN_BOX_CHAMFER:
        misses.append("own-box Chamfer more than 0.1 points from the job frame's")
    if f["open_edges"] or f["nonmanifold_edges"]:
        misses.append(f"not watertight: {f['open_edges']} open edges, {f['nonmanifold_edges']} of 3+ faces")
    return misses


def table(rows: list[tuple[str, int, dict]]) -> str:
    lines = ["| case | seed | pieces | under 1% (share) | outside box | Chamfer job / own box | IoU | clean |",
             "|---|---|---|---|---|---|---|---|"]
    for case, seed, m in rows:
        f, final = m["file"], m["final"]
        misses = verdict(m)
        lines.append(f"| {case} | {seed} | {f['pieces']} | {f['small_pieces']} ({f['small_share']:.2%}) | "
                     f"{f['outside_box']:.2%} | {final['chamfer_rel']:.2%} / {f['chamfer_own_box']:.2%} | "
                     f"{final['iou']:.3f} | {'yes' if not misses else 'no: ' + '; '.join(misses)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", nargs="*", default=[*TARGETS, *MODES], choices=[*TARGETS, *MODES])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    ap.add_argument("--preset", default="draft", help="the targets' preset (the mode cases use their job's)")
    ap.add_argument("--overrides", type=json.loads, default={},
                    help='JSON added to every case\'s job overrides, e.g. \'{"phase2.iterations": 400}\'')
    args = ap.parse_args()
    out = Path(args.out)
    rows = []
    for seed in args.seeds:
        for case in args.cases:
            print(f"{case} seed {seed}", flush=True)
            rows.append((case, seed, run_case(case, seed, out, args.preset, args.overrides)))
    (out / "summary.json").write_text(json.dumps([{"case": c, "seed": s, **m} for c, s, m in rows], indent=2))
    print(table(rows))
    if any(verdict(m) for _, _, m in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
