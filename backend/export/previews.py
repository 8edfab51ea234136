"""preview.png (one three-quarter view) and turntable.png (8 views in a strip) of a mesh."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..atomic import atomic_path
from ..geometry.mesh import Mesh
from ..render.mesh_material import render_target
from ..render.camera import orbit_cameras
from ..render.raster import Rasterizer
from ..render.shading import fixed_views


def to_png(image: torch.Tensor, path: str | Path) -> None:
    """image [H,W,3] in [0,1] -> PNG."""
    with atomic_path(path) as tmp:
        Image.fromarray((image.detach().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)).save(tmp)


def turntable_views(resolution: int, count: int = 8, elevation: float = 15.0):  # noqa: ANN201
    az = torch.arange(count, dtype=torch.float32) * (360.0 / count)
    return fixed_views(orbit_cameras(elevation, az, 2.5, 40.0, resolution), "lambertian")


def write_previews(raster: Rasterizer, mesh: Mesh, out_dir: Path, resolution: int) -> None:
    views = turntable_views(resolution)
    images = render_target(raster, mesh, views)
    to_png(torch.cat(list(images), dim=1), out_dir / "turntable.png")
    to_png(images[1], out_dir / "preview.png")
