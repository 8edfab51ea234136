"""SGC's multi-view targets (TV-3DG Sec. 3.3) as guidance reads them, and what a loss asks
the job to make them with: a leaf module, so the job's interface (base.Conditioning) can
name them without importing the loss."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from ..render.camera import normals_from_depth

# images [B,3,H,W] in [0,1] -> disparity [B,h,w]
DepthFn = Callable[[torch.Tensor], torch.Tensor]


class MultiviewSettings(Protocol):
    """What making the targets reads of SGC's config (sgc.SGCConfig)."""

    resolution: int  # of the four renders and targets
    guidance_scale: float  # Zero-1-to-3's, when synthesising them
    steps: int  # DDIM steps of that synthesis
    depth: float  # > 0: disparity is estimated
    normal: float  # > 0: normals are estimated


@dataclass
class SGCTargets:
    """The multi-view images M and what is estimated from them, all at the render size:
    image [4,H,W,3] in [0,1], mask [4,H,W] in {0,1}, disparity [4,H,W] (relative inverse
    depth), normal [4,H,W,3] camera space (OpenGL: +x right, +y up, +z to the viewer)."""

    image: torch.Tensor
    mask: torch.Tensor
    disparity: torch.Tensor | None = None  # only when SGC has geometry parts
    normal: torch.Tensor | None = None

    @staticmethod
    def estimate(images: torch.Tensor, masks: torch.Tensor, depth_model: DepthFn) -> "SGCTargets":
        """images [4,H,W,3], masks [4,H,W]; depth_model: [B,3,H,W] -> disparity [B,h,w]."""
        with torch.no_grad():
            disp = depth_model(images.permute(0, 3, 1, 2)).float()[:, None]
            disp = torch.nn.functional.interpolate(disp, images.shape[1:3], mode="bilinear", align_corners=False)[:, 0]
        lo = torch.stack([d[m > 0.5].min() if (m > 0.5).any() else d.min() for d, m in zip(disp, masks)])
        hi = disp.flatten(1).amax(1)
        # Disparity normalised to [0,1] inside the object, read as depth in units of the image
        # width for the normals: relative, so only the shape of the surface matters.
        norm = (disp - lo[:, None, None]) / (hi - lo).clamp(min=1e-6)[:, None, None]
        normal = normals_from_depth(-norm * 0.5)  # nearer = larger disparity = smaller depth
        return SGCTargets(images, masks, disp, normal)


