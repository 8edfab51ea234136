"""Modality Similarity loss (XBind Eq. 2).

The rendered views pass through three augmentations, global G (random perspective), local
L (random crop, then perspective) and plain normalisation Z, into the CLIP image encoder:
    L_MS = ω_g L_ms-g + ω_l L_ms-l + ω_z L_ms-z,  L_ms-a = Σ_{i=1..n} W_i E[1 - S(C_m, E(a_i(x)))]
with n augmentations a_i drawn per iteration, W_i their weights and E[.] the mean over the
rendered views. The paper writes the similarity S itself; as a loss to minimise it is
1 - S (the same gradient as -S, and 0 at a perfect match). Z is deterministic, so its n
terms are one term weighted Σ W_i. Cosine similarity makes the loss invariant to the
scale of either embedding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch.utils.checkpoint import checkpoint

from ..render.shading import Frame, Views
from ..schema import Span, setting
from .base import Conditioning, Guidance, GuidanceConfig, OnBatch, PhaseSettings, register_loss
from ..models import graphs
from ..models.encoders import clip_image_encoder

# images [B,3,H,W] in [0,1] -> embeddings [B,D] (the encoder prepares them as its processor does)
ImageEncoder = Callable[[torch.Tensor], torch.Tensor]


def random_perspective(x: torch.Tensor, distortion: float, generator: torch.Generator) -> torch.Tensor:
    """Warp [B,C,H,W] by a random homography that moves each corner inwards by up to
    `distortion` of the half-size along each axis (torchvision's RandomPerspective, which
    Text2Mesh's augmentations use, in plain torch; continuous instead of whole pixels); what
    falls outside the image takes its border (the render's background)."""
    b = x.shape[0]
    src = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]).expand(b, 4, 2)
    dst = src * (1 - torch.rand(b, 4, 2, generator=generator) * distortion)
    h = _homography(dst, src)  # maps output coordinates to input coordinates
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, x.shape[2]), torch.linspace(-1, 1, x.shape[3]), indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(1, -1, 3).expand(b, -1, -1)
    mapped = pts @ h.transpose(1, 2)
    grid = (mapped[..., :2] / mapped[..., 2:]).reshape(b, x.shape[2], x.shape[3], 2)
    return torch.nn.functional.grid_sample(x, grid.to(x), mode="bilinear", padding_mode="border", align_corners=True)


def _homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """[B,4,2] point pairs -> [B,3,3] H with dst ~ H src (direct linear transform)."""
    rows = []
    for i in range(4):
        x, y = src[:, i, 0], src[:, i, 1]
        u, v = dst[:, i, 0], dst[:, i, 1]
        one, zero = torch.ones_like(x), torch.zeros_like(x)
        rows.append(torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1))
        rows.append(torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1))
    a = torch.stack(rows, 1)
    rhs = torch.stack([dst[:, i, j] for i in range(4) for j in range(2)], 1)
    sol = torch.linalg.solve(a, rhs)
    return torch.cat([sol, torch.ones_like(sol[:, :1])], 1).reshape(-1, 3, 3)


def random_crop(x: torch.Tensor, scale: tuple[float, float], size: int, generator: torch.Generator) -> torch.Tensor:
    """Random square crops covering `scale` of the side, resampled to size x size."""
    b = x.shape[0]
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(b, generator=generator)
    c = (torch.rand(b, 2, generator=generator) * 2 - 1) * (1 - s)[:, None]
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = s, s
    theta[:, :, 2] = c
    grid = torch.nn.functional.affine_grid(theta.to(x), [b, x.shape[1], size, size], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@register_loss("ms")
@dataclass(frozen=True)
class MSConfig(GuidanceConfig):
    roles: ClassVar[frozenset[str]] = frozenset({"clip", "imagebind"})
    omega_g: float = setting(1.0, lo=0.0)  # global augmentation
    omega_l: float = setting(1.0, lo=0.0)  # local augmentation
    omega_z: float = setting(1.0, lo=0.0)  # normalisation only
    aug_weights: tuple[float, ...] = setting((1.0,), lo=0.0)  # W_i; n = its length
    distortion: float = setting(0.5, lo=0.0, hi=1.0)  # perspective: corner moves as a fraction of the half-size
    crop_scale: Span = setting((0.5, 0.9), lo=0.0, hi=1.0)  # local crops: fraction of the side
    # Backward recomputes the ViT instead of keeping its activations through the rest of
    # the step: 2.4 GB of ViT-H activations for 12 images (standard's peak: 1.7 GB), for one
    # more forward of work.
    recompute: bool = True

    def __post_init__(self) -> None:
        if not self.aug_weights:
            raise ValueError("aug_weights: give at least one augmentation weight")

    def paper_term(self, phase_cfg: PhaseSettings, cond: Conditioning, seed: int) -> Guidance:
        return MSLoss(clip_image_encoder(cond.store), cond.c_m().unit, self, seed)


class MSLoss(OnBatch):

    def __init__(self, encoder: ImageEncoder, target: torch.Tensor, cfg: MSConfig, seed: int) -> None:
        """target: C_m [D] (any scale)."""
        self.encoder, self.cfg = encoder, cfg
        self.target = torch.nn.functional.normalize(target.reshape(1, -1).float(), dim=-1)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, frame: Frame, views: Views | None, step: int, total: int) -> dict[str, torch.Tensor]:
        c = self.cfg
        # Augmented at the render's resolution; the encoder then prepares each image as CLIP's
        # processor does (antialiased bicubic to its input size).
        x = frame.image.permute(0, 3, 1, 2)
        # Augmentations drawn in a fixed order: for each i, G's warp, then L's crop and warp.
        batches, weights = [x], [c.omega_z * sum(c.aug_weights)]
        for w_i in c.aug_weights:
            if c.omega_g:
                batches.append(random_perspective(x, c.distortion, self.generator))
                weights.append(c.omega_g * w_i)
            if c.omega_l:
                crop = random_crop(x, c.crop_scale, x.shape[-1], self.generator)
                batches.append(random_perspective(crop, c.distortion, self.generator))
                weights.append(c.omega_l * w_i)
        # One encoder call for all augmentations.
        batch = torch.cat(batches)
        if c.recompute:  # eagerly: a graph's pool would keep the activations anyway
            with graphs.eager():
                emb = checkpoint(self.encoder, batch, use_reentrant=False)
        else:
            emb = self.encoder(batch)
        emb = torch.nn.functional.normalize(emb.float(), dim=-1)
        per = (1 - emb @ self.target.to(emb).T)[:, 0].reshape(len(batches), -1).mean(1)  # E[1 - S] per batch
        return {"ms": sum(w * p for w, p in zip(weights, per))}
