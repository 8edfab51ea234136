"""SGC's targets for a job (TV-3DG Sec. 3.3): four views of x_r (front, right, back, left)
where the front is x_r itself and the others are synthesised by Zero-1-to-3, their
foreground masks, and, when SGC has geometry parts, disparity and normals estimated from
them. Made once per job and size. `cond` is the job's conditioning (job_conditioning.py,
which builds SGC through make_sgc)."""
from __future__ import annotations

from typing import Any

import torch

from ..conditioning.image import foreground_mask
from ..guidance.sampling import ddim_generate
from ..guidance.sgc import SGC, SGC_AZIMUTHS, SGCConfig, SGCTargets
from ..render.camera import Cameras, orbit_cameras
from ..render.shading import fixed_views
from ..models import encoders
from .seeds import stream


def sgc_cameras(cond: Any, resolution: int) -> Cameras:
    """The four SGC cameras around the reference pose."""
    el, _, radius, fov = cond.ref_view().pose
    return orbit_cameras(el, torch.tensor(SGC_AZIMUTHS), radius, fov, resolution)


def _synthesise(cond: Any, cams: Cameras, cfg: SGCConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """-> images [4,S,S,3] in [0,1], masks [4,S,S] in {0,1} at the SGC resolution S."""
    den = cond.zero123().with_scale(cfg.guidance_scale)
    f = den.resolution // den.ref_latent.shape[-1]
    side = fixed_views(cams.index([1, 2, 3]), "albedo").to(den.c.device)
    gen = stream(cond.seed, "sgc_targets")
    novel = ddim_generate(den, (3, 4, den.resolution // f, den.resolution // f), den.c.device, cfg.steps, gen,
                          side).cpu()
    rgba = cond.reference()
    images, masks = [cond.reference_rgb()], [rgba[..., 3]]
    for img in novel:
        img = torch.nn.functional.interpolate(img.permute(2, 0, 1)[None], rgba.shape[:2], mode="bilinear",
                                              align_corners=False)[0].permute(1, 2, 0)
        images.append(img)
        masks.append(foreground_mask(torch.cat([img, torch.ones_like(img[..., :1])], -1), cond.segmenter()))
    size = (cfg.resolution, cfg.resolution)
    resize = lambda x: torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=False)  # noqa: E731
    cond.log("SGC: multi-view images synthesised by Zero-1-to-3")
    return (resize(torch.stack(images).permute(0, 3, 1, 2)).permute(0, 2, 3, 1),
            (resize(torch.stack(masks)[:, None].float())[:, 0] > 0.5).float())


def make_sgc(cond: Any, cfg: SGCConfig) -> SGC:
    """SGC with the config's part weights, its targets made once per job and resolution."""
    cams = sgc_cameras(cond, cfg.resolution)
    images, masks = cond.once(f"sgc_views{cfg.resolution}", lambda: _synthesise(cond, cams, cfg))
    if cfg.depth > 0 or cfg.normal > 0:
        targets = cond.once(f"sgc_targets{cfg.resolution}",
                             lambda: SGCTargets.estimate(images, masks, encoders.depth(cond.store)))
    else:
        targets = SGCTargets(images, masks)
    reward = encoders.reward(cond.store, cond.text) if cfg.reward > 0 else None
    dino = encoders.dino(cond.store) if cfg.semantic > 0 else None
    return SGC(targets, cams, reward, dino, cfg)
