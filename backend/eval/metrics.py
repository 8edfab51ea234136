"""Reconstruction metrics for oracle runs: Chamfer distance, silhouette IoU, PSNR.
(CLIP-based metrics of the papers live beside these once the models are in.)"""
from __future__ import annotations

import torch
from scipy.spatial import cKDTree

from ..geometry.mesh_sdf import surface_samples


def chamfer(verts_a: torch.Tensor, faces_a: torch.Tensor, verts_b: torch.Tensor, faces_b: torch.Tensor,
            samples: int = 30_000) -> float:
    """Symmetric mean nearest-neighbour distance between surface samples (L1 Chamfer, in
    world units; divide by the bounding-box diagonal for a relative figure)."""
    pa = surface_samples(verts_a.detach().cpu(), faces_a.cpu(), samples, seed=1).numpy()
    pb = surface_samples(verts_b.detach().cpu(), faces_b.cpu(), samples, seed=2).numpy()
    da, _ = cKDTree(pb).query(pa, workers=-1)
    db, _ = cKDTree(pa).query(pb, workers=-1)
    return float((da.mean() + db.mean()) / 2)


def iou(mask_a: torch.Tensor, mask_b: torch.Tensor) -> float:
    """Silhouette IoU of boolean-able masks of equal shape."""
    a, b = mask_a > 0.5, mask_b > 0.5
    union = (a | b).sum()
    return float((a & b).sum() / union) if union > 0 else 1.0


def psnr(image_a: torch.Tensor, image_b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB of images in [0,1]; with mask [...,1] only over masked pixels. Capped at
    100 dB (identical images) so metrics.json stays standard JSON."""
    err = (image_a - image_b) ** 2
    if mask is not None:
        m = (mask > 0.5).expand_as(err)
        err = err[m]
    mse = float(err.mean())
    return 100.0 if mse <= 1e-10 else float(-10 * torch.log10(torch.tensor(mse)))
