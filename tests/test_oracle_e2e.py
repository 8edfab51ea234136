"""End to end: the draft preset with oracle guidance reconstructs procedural targets
(holes, concavities, thin parts, strong colours) through all three phases and export."""
import json
from pathlib import Path

import pytest

from backend.eval.oracle_report import BOX_MARGIN
from backend.eval.targets import write_target
from backend.server.jobs import run_job

from .helpers import ONE_PREVIEW, assert_clean_file, assert_clean_gltf


# Draft's phase I at 128² and phase II at tet_res 96 and 256² are sized for 4 mm parts, and
# cost this CPU 3-4x the time of 64², 48 and 128² (a blocky target has 270k faces a step at
# 96). Table runs the preset as shipped; the ring and the blocks have no part under 8% of
# their size and run at the coarse sizes.
COARSE = {"phase1.resolution": 64, "phase2.tet_res": 48, "phase2.resolution": 128}


# own_box: the file framed by its own box scores within 0.1 points of the job frame's Chamfer;
# outside: the most its surface may stand outside the target's box (share of the diagonal).
# Phase II shades the DMTet by its face normals (render_mesh): with vertex normals the table's
# flat faces ended 1.9% outside and 0.5 points apart. Measured now (2-core CPU, 2026-12-06): the
# ring 0.2% and 0.00 points; the table 0.8% and 0.14 points (draft's 200 phase II steps; 400
# close it to 0.06); the blocks at the coarse sizes 1.0% and 0.34 points (their bottom, which no
# phase II camera sees, keeps phase I's hand-over offset: docs/quality.md).
@pytest.mark.slow
@pytest.mark.parametrize("name, overrides, own_box, outside",
                         [("ring", COARSE, True, 0.01), ("table", {}, False, 0.01),
                          ("blocks", COARSE, False, BOX_MARGIN)],
                         ids=["ring", "table", "blocks"])
def test_oracle_reconstruction(tmp_path: Path, name: str, overrides: dict, own_box: bool, outside: float):
    job_path = write_target(name, tmp_path, overrides={**ONE_PREVIEW, **overrides})
    out = tmp_path / "out"
    result = run_job(json.loads(job_path.read_text()), tmp_path, out)
    assert result is not None, (out / "events.jsonl").read_text()[-2000:]
    assert_clean_gltf(result["glb"])
    m = json.loads((out / "metrics.json").read_text())
    final = m["final"]
    assert final["chamfer_rel"] < 0.02
    assert final["iou"] > 0.9
    assert final["texture_psnr"] > 24.0
    assert_clean_file(m, own_box=own_box)  # the file on its own: one clean object, as a viewer frames it
    assert m["file"]["outside_box"] <= outside
    # each phase improves what it is for: phase II geometry (normals), phase III texture
    assert m["phase2"]["normal_psnr"] > m["phase1"]["normal_psnr"]
    assert final["texture_psnr"] > m["phase2"]["texture_psnr"] - 0.5
