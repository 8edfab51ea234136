"""SGC's targets for a job (TV-3DG Sec. 3.3): four views of x_r (front, right, back, left)
where the front is x_r itself and the others are synthesised by Zero-1-to-3, their
foreground masks, and, when SGC has geometry parts, disparity and normals estimated from
them (job_conditioning.JobConditioning.sgc_targets makes them once per job and size)."""
from __future__ import annotations

import torch

from ..conditioning.image import Segmenter, foreground_mask
from ..guidance.sampling import ddim_generate
from ..guidance.multiview import MultiviewSettings
from ..guidance.sgc import SGC_AZIMUTHS
from ..guidance.zero123 import Zero123Denoiser
from ..render.camera import Cameras, orbit_cameras
from ..render.shading import fixed_views


def sgc_cameras(pose: tuple, resolution: int) -> Cameras:
    """The four SGC cameras around the reference pose (elevation, azimuth, radius, fov)."""
    el, _, radius, fov = pose
    return orbit_cameras(el, torch.tensor(SGC_AZIMUTHS), radius, fov, resolution)


def synthesise_views(den: Zero123Denoiser, reference: torch.Tensor, segment: Segmenter, cams: Cameras,
                     cfg: MultiviewSettings, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference ([H,W,4], mask in alpha) and Zero-1-to-3's views of it at the three other
    cameras (den at the synthesis' CFG scale) -> images [4,S,S,3] in [0,1] (composited on
    white), masks [4,S,S] in {0,1} at the SGC resolution S."""
    f = den.resolution // den.ref_latent.shape[-1]
    side = fixed_views(cams.index([1, 2, 3]), "albedo").to(den.c.device)
    novel = ddim_generate(den, (3, 4, den.resolution // f, den.resolution // f), den.c.device, cfg.steps, generator,
                          side).cpu()
    rgb = reference[..., :3] * reference[..., 3:] + (1 - reference[..., 3:])
    images, masks = [rgb], [reference[..., 3]]
    for img in novel:
        img = torch.nn.functional.interpolate(img.permute(2, 0, 1)[None], reference.shape[:2], mode="bilinear",
                                              align_corners=False)[0].permute(1, 2, 0)
        images.append(img)
        masks.append(foreground_mask(torch.cat([img, torch.ones_like(img[..., :1])], -1), segment))
    size = (cfg.resolution, cfg.resolution)
    resize = lambda x: torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=False)  # noqa: E731
    return (resize(torch.stack(images).permute(0, 3, 1, 2)).permute(0, 2, 3, 1),
            (resize(torch.stack(masks)[:, None].float())[:, 0] > 0.5).float())
