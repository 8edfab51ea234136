"""End to end: the draft preset with oracle guidance reconstructs procedural targets
(holes, concavities, thin parts, strong colours) through all three phases and export."""
import json
from pathlib import Path

import pytest

from backend.eval.targets import write_target
from backend.server.jobs import run_job

from .helpers import ONE_PREVIEW, assert_clean_file, assert_clean_gltf


# Draft's phase I at 128² and phase II at tet_res 96 and 256² are sized for 4 mm parts, and
# cost this CPU 3-4x the time of 64², 48 and 128² (a blocky target has 270k faces a step at
# 96). Table runs the preset as shipped; the ring and the blocks have no part under 8% of
# their size and run at the coarse sizes.
COARSE = {"phase1.resolution": 64, "phase2.tet_res": 48, "phase2.resolution": 128}


# own_box: the file framed by its own box scores within 0.1 points of the job frame's Chamfer.
# The table's and the blocks' flat faces come out 1-2% of the diagonal too far out on every
# side (phase I's hand-over; phase II pulls the blocks in halfway, the table not at all:
# README "Known limits"), so framing by the file's own box rescales them: one piece, nothing
# outside the box + 2%, but 0.5 and 0.4 points apart (measured; the ring: 0.01).
@pytest.mark.slow
@pytest.mark.parametrize("name, overrides, own_box", [("ring", COARSE, True), ("table", {}, False),
                                                      ("blocks", COARSE, False)], ids=["ring", "table", "blocks"])
def test_oracle_reconstruction(tmp_path: Path, name: str, overrides: dict, own_box: bool):
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
    # each phase improves what it is for: phase II geometry (normals), phase III texture
    assert m["phase2"]["normal_psnr"] > m["phase1"]["normal_psnr"]
    assert final["texture_psnr"] > m["phase2"]["texture_psnr"] - 0.5
