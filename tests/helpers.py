"""Shared test inputs: a few-second oracle job on the blocks target."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from backend.eval.oracle_report import BOX_MARGIN, OWN_BOX_CHAMFER
from backend.eval.targets import write_target
from backend.geometry.pieces import PieceConfig

ROOT = Path(__file__).resolve().parents[1]
# Previews only at each phase's end (the runner always makes that one): a phase-I preview
# renders the NeRF at 128² on the CPU (a second and a half), and no test looks at the others.
ONE_PREVIEW = {"progress.preview_every": 1_000_000}
# A job's mechanics in seconds (resume, cancel, faults, the farm): small renders, few steps
# (quality is the oracle end-to-end tests' concern).
TINY = {"phase1.iterations": 12, "phase2.density_threshold": 5.0, "phase2.iterations": 10, "phase3.iterations": 10,
        "phase1.resolution": 32, "phase1.samples": 16, "phase2.resolution": 64, "phase3.resolution": 64,
        "phase2.tet_res": 24, "progress.checkpoint_every": 4, **ONE_PREVIEW, "export.texture_size": 128}

# export.pieces for tests that build a textured mesh from a surface directly (the runner
# keeps the object's pieces before that: geometry/pieces.py).
NO_REMOVAL = PieceConfig(min_area=0.0, min_faces=0.0)


def oracle_job(folder: Path, **extra) -> dict:
    """Writes blocks.glb into folder; -> an oracle job aimed at it (paths relative to folder)."""
    if not (folder / "blocks.glb").exists():
        write_target("blocks", folder)
    return {"version": 1, "guidance": "oracle", "oracle": {"target_mesh": "blocks.glb"}, **extra}


VALIDATOR = ROOT / "tools" / "gltf"


def gltf_report(path: Path) -> dict | None:
    """The Khronos glTF validator's counts and messages for a GLB; None when node or the
    validator (make test installs it with npm) is missing."""
    if shutil.which("node") is None or not (VALIDATOR / "node_modules" / "gltf-validator").is_dir():
        return None
    out = subprocess.run(["node", str(VALIDATOR / "validate.mjs"), str(path)], capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def assert_clean_gltf(path: Path) -> None:
    """No errors and no warnings from the validator (hints and infos allowed), when it is there."""
    report = gltf_report(path)
    if report is not None:
        assert report["numErrors"] == 0 and report["numWarnings"] == 0, report["messages"]


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """(cert.pem, key.pem) for 127.0.0.1, made by openssl; the test is skipped without it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate can be made")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def forward_kwarg(module, name: str, call) -> "torch.Tensor":  # noqa: ANN001
    """The keyword argument `name` a module's forward receives while call() runs, every call
    concatenated (a network seen as a black box)."""
    import torch

    seen = []
    handle = module.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs[name].clone()),
                                              with_kwargs=True)
    try:
        call()
    finally:
        handle.remove()
    return torch.cat(seen)


def assert_first_ddim_step(scheduler, seen: dict, latents, eps) -> None:  # noqa: ANN001
    """A diffusers pipeline's first DDIM step of a 2-step run (seen: its t and the latents
    after it) equals one DDIM step from `latents` along the noise `eps` ours predicted."""
    import torch

    from backend.guidance.csm import ddim_step

    prev = seen["t"] - scheduler.config.num_train_timesteps // 2
    ac = scheduler.alphas_cumprod
    a_prev = ac[prev] if prev >= 0 else scheduler.final_alpha_cumprod
    assert torch.allclose(seen["latents"], ddim_step(latents, eps, ac[seen["t"]], a_prev), atol=1e-5)


def assert_clean_file(metrics: dict, box: bool = True, own_box: bool = True) -> None:
    """An oracle run's exported file on its own (metrics.json's "file"): no piece under 1%
    of the area; with `box`, no surface past the target's box by more than 2% of its
    diagonal; with `own_box`, framed by its own box the Chamfer within 0.1 percentage points
    of the job frame's (issue 37's bars; the last two also measure how well the result's
    extents match the target's, which pieces are not the only thing to spoil); watertight
    (every edge of two faces, welded by position: the targets are closed)."""
    f = metrics["file"]
    assert f["small_pieces"] == 0, f
    assert (f["open_edges"], f["nonmanifold_edges"]) == (0, 0), f
    if box:
        assert f["outside_box"] <= BOX_MARGIN, f
    if own_box:
        assert abs(f["chamfer_own_box"] - metrics["final"]["chamfer_rel"]) <= OWN_BOX_CHAMFER, (f, metrics["final"])
