"""Semantic-Geometry Calibration (TV-3DG Eq. 10-13).

Four renders S at front / right / back / left are compared with four multi-view images M
that Zero-1-to-3 synthesises once from the guidance image (the reference view):

- reward    λ_i · ϕ(R(grid(S), y)): a human-preference reward of the 2x2 grid of S for
            the text y, through ReFL's bounded map ϕ(r) = max(0, margin - r): the loss
            stops at the margin instead of rewarding ever higher scores (which a
            differentiable reward lets an optimiser reach by exploiting the reward model);
            the margin is in the reward's own units (PickScore: 100 · cos);
- semantic  λ_2 · mean_v ‖D(S_v) - D(M_v)‖² (Eq. 12): DINO features (global token),
            summed over the feature dimension, averaged over the four views;
- depth     λ_1 · -Pearson(ϖ(M_v), 1/depth(S_v)) over the pixels both call foreground:
            the estimate ϖ is relative inverse depth, so the render's depth enters as
            disparity; Pearson ignores the unknown scale and shift;
- normal    λ_1 · -cos(nor(M_v), n(S_v)) on the same pixels, nor = normals from ϖ(M_v),
            n(S) the rendered normals turned into camera space.

The paper runs ϖ and nor on S as well; here the rendered depth and normals stand in for
them: they are exact, cheaper, and give the geometry its gradient directly.
A part with weight 0 is neither computed nor reported (phase II renders normal maps, so
its preset keeps only depth and normal; phase III has frozen geometry: reward, semantic).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from ..models import encoders
from ..render.camera import Cameras, world_to_camera_dirs
from ..render.shading import Frame, Views
from ..schema import setting
from .base import Conditioning, Guidance, GuidanceConfig, OnCameras, PhaseSettings, register_loss
from .multiview import SGCTargets

# images [B,3,H,W] in [0,1] -> features [B,D]
FeatureFn = Callable[[torch.Tensor], torch.Tensor]
# grid image [1,3,H,W] in [0,1] -> reward [1] (the text is bound inside)
RewardFn = Callable[[torch.Tensor], torch.Tensor]

SGC_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)  # front, right, back, left
PARTS = ("reward", "semantic", "depth", "normal")
PART_ROLES = {"reward": "reward", "semantic": "dino", "depth": "depth", "normal": "depth"}


@register_loss("sgc")
@dataclass(frozen=True)
class SGCConfig(GuidanceConfig):
    """TV-3DG's λ per part (λ_1 for depth and normal); a part at 0 is not computed."""

    roles: ClassVar[frozenset[str]] = frozenset({"zero123"})  # the multi-view targets
    needs_reference: ClassVar[bool] = True
    reward: float = setting(2.5, lo=0.0)
    semantic: float = setting(4.0, lo=0.0)
    depth: float = setting(1.0, lo=0.0)
    normal: float = setting(1.0, lo=0.0)
    reward_margin: float = setting(25.0, lo=0.0)  # ϕ's margin, PickScore units
    resolution: int = setting(256, lo=8, hi=4096)  # of the four renders and targets
    guidance_scale: float = setting(3.0, lo=0.0)  # Zero-1-to-3 when synthesising the targets
    steps: int = setting(50, lo=1, hi=1000)  # DDIM steps of that synthesis (Zero-1-to-3 gradio_new.py ddim_steps)

    def model_roles(self) -> set[str]:
        return set(self.roles) | {PART_ROLES[k] for k in PARTS if getattr(self, k) > 0}

    def paper_term(self, phase_cfg: PhaseSettings, cond: Conditioning, seed: int) -> Guidance:
        """The job's multi-view targets (made once a job and size), its reward and DINO."""
        targets, cameras = cond.sgc_targets(self)
        reward = encoders.reward(cond.store, cond.text) if self.reward > 0 else None
        dino = encoders.dino(cond.store) if self.semantic > 0 else None
        return SGC(targets, cameras, reward, dino, self)


def pearson(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pearson correlation of a and b [..., N] along the last axis, over the elements where
    mask is True (all without one): masked, not gathered, so the host never reads how many."""
    w = torch.ones_like(a) if mask is None else mask.to(a.dtype)
    n = w.sum(-1, keepdim=True).clamp(min=1)
    a = (a - (a * w).sum(-1, keepdim=True) / n) * w
    b = (b - (b * w).sum(-1, keepdim=True) / n) * w
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-8)


def grid2x2(images: torch.Tensor) -> torch.Tensor:
    """[4,3,H,W] (front, right, back, left) -> [1,3,2H,2W]: front right / back left."""
    top = torch.cat([images[0], images[1]], dim=2)
    bottom = torch.cat([images[2], images[3]], dim=2)
    return torch.cat([top, bottom], dim=1)[None]


class SGC(OnCameras):
    def __init__(self, targets: SGCTargets, cameras: Cameras, reward: RewardFn | None, dino: FeatureFn | None,
                 cfg: SGCConfig) -> None:
        """cameras: the four SGC cameras the targets were made for (the phase renders them)."""
        self.t, self.cameras, self.reward, self.dino, self.margin = targets, cameras, reward, dino, cfg.reward_margin
        self.w = {k: float(getattr(cfg, k)) for k in PARTS}
        if self.w["semantic"] > 0 and dino is None or self.w["reward"] > 0 and reward is None:
            raise ValueError("SGC: the semantic part needs a DINO model and the reward part a reward model")
        self.needs_geometry = self.w["depth"] > 0 or self.w["normal"] > 0
        self.generator = None  # deterministic: nothing to checkpoint
        self._target_features = None

    def __call__(self, frame: Frame, views: Views | None, step: int, total: int) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        x = frame.image.permute(0, 3, 1, 2)
        if self.w["reward"] > 0:
            out["reward"] = self.w["reward"] * torch.relu(self.margin - self.reward(grid2x2(x))).mean()
        if self.w["semantic"] > 0:
            if self._target_features is None:
                with torch.no_grad():
                    self._target_features = self.dino(self.t.image.permute(0, 3, 1, 2).to(x))
            f = self.dino(x)
            out["semantic"] = self.w["semantic"] * ((f - self._target_features.to(f)) ** 2).sum(-1).mean()
        if self.needs_geometry:
            # Per view over the pixels both cover, masked (no host read): a view with fewer
            # than 16 has nothing comparable yet and is left out of the mean over views.
            both = ((self.t.mask.to(x) > 0.5) & (frame.opacity[..., 0] > 0.5) & (frame.depth[..., 0] > 0)).flatten(1)
            count = both.sum(-1)
            used = (count >= 16).to(x.dtype)
            n_views = used.sum().clamp(min=1)
            n_cam = world_to_camera_dirs(frame.normal, self.cameras.c2w.to(x))
            depth = frame.depth[..., 0].flatten(1)
            disp = torch.where(both, 1.0 / depth.clamp(min=1e-8), 0.0)
            if self.w["depth"] > 0:
                r = pearson(self.t.disparity.to(x).flatten(1), disp, both)
                out["depth"] = self.w["depth"] * -(r * used).sum() / n_views
            if self.w["normal"] > 0:
                cos = torch.nn.functional.cosine_similarity(n_cam, self.t.normal.to(x), dim=-1).flatten(1)
                mean_cos = (cos * both).sum(-1) / count.clamp(min=1)
                out["normal"] = self.w["normal"] * -(mean_cos * used).sum() / n_views
        return out
