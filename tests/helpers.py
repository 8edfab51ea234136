"""Shared test inputs: a few-second oracle job on the blocks target."""
from pathlib import Path

from backend.eval.targets import write_target

ROOT = Path(__file__).resolve().parents[1]
TINY = {"phase1.iterations": 12, "phase2.density_threshold": 5.0, "phase2.iterations": 10, "phase3.iterations": 10,
        "phase2.tet_res": 24, "progress.checkpoint_every": 4, "progress.preview_every": 4,
        "export.texture_size": 128}


def oracle_job(folder: Path, **extra) -> dict:
    """Writes blocks.glb into folder; -> an oracle job aimed at it (paths relative to folder)."""
    if not (folder / "blocks.glb").exists():
        write_target("blocks", folder)
    return {"version": 1, "guidance": "oracle", "oracle": {"target_mesh": "blocks.glb"}, **extra}
