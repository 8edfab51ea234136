"""Decimation of a large mesh in bounded stages (at the call site of geometry/cleanup.py,
whichever library does the collapsing): each stage removes at most STAGE_FACES faces, so
the caller can report progress and honour a cancel between stages. Stages stop within
one stage of the target; the caller's own cleanup does the last one, as it did before, so
a mesh already within one stage of its budget comes out exactly as it always has. Inputs
are bounded before reading (mesh_files.MAX_MESH_FACES)."""
from __future__ import annotations

import math
from typing import Callable

import torch

from .cleanup import cleanup

# Faces removed per stage: 7 to 13 s on 2 CPU cores (measured 2026-12-06, VTK's
# vtkQuadricDecimation on a noisy icosphere: 1.3 M -> 200 k faces in 18 s).
STAGE_FACES = 500_000


def coarse_stages(faces: int, target: int) -> int:
    """How many stages decimate_coarsely runs for `faces` -> `target`."""
    return max(math.ceil((faces - target) / STAGE_FACES) - 1, 0)


def decimate_coarsely(verts: torch.Tensor, faces: torch.Tensor, target: int, start: Callable[[str], None],
                      colors: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """verts [V,3], faces [F,3], colours [V,3] or None -> the same, down to within
    STAGE_FACES of `target`; start(what) is called before each stage (it may raise to
    cancel)."""
    while faces.shape[0] - target > STAGE_FACES:
        goal = faces.shape[0] - STAGE_FACES
        start(f"decimating {faces.shape[0]:,} -> {goal:,} faces")
        verts, faces, colors = cleanup(verts, faces, goal, colors)
    return verts, faces, colors
