"""Reference-view loss (XBind Eq. 11): at the reference camera the render must show the
reference image x_r inside its mask m and match the mask itself:
    ω_rgb ||m ⊙ (x_r - x̂_r)||² + ω_mask ||m - M(x̂_r)||²,
implemented as MSE(rgb, x_r·m + bg·(1-m)) + BCE(opacity, m) as in the reference code, so
the background outside the mask is pulled to the render's background colour.
"""
from __future__ import annotations

import torch

from ..render.camera import orbit_cameras
from ..render.shading import Views, fixed_views


class RefView:
    def __init__(self, rgba: torch.Tensor, elevation: float = 0.0, azimuth: float = 0.0, radius: float = 2.5,
                 fov: float = 40.0, rgb_weight: float = 1.0, mask_weight: float = 0.1) -> None:
        """rgba: [H,W,4] in [0,1], alpha = foreground mask m. The preset's ref_view weight
        scales both terms (Magic123's 1000 / 100 is weight 1000 with these defaults)."""
        self.rgb, self.mask = rgba[..., :3], rgba[..., 3:4]
        self.pose = (elevation, azimuth, radius, fov)
        self.rgb_weight, self.mask_weight = rgb_weight, mask_weight

    def views(self, background: str | list[float] = "white") -> Views:
        el, az, r, fov = self.pose
        return fixed_views(orbit_cameras(el, az, r, fov, self.rgb.shape[0], self.rgb.shape[1]), "albedo", background)

    def __call__(self, image: torch.Tensor, opacity: torch.Tensor, views: Views) -> dict[str, torch.Tensor]:
        """image [1,H,W,3], opacity [1,H,W,1] rendered from self.views()."""
        bg = views.background.to(image)[:, None, None, :]
        target = self.rgb.to(image) * self.mask.to(image) + bg * (1 - self.mask.to(image))
        rgb = torch.nn.functional.mse_loss(image, target[None] if target.dim() == 3 else target)
        mask = torch.nn.functional.binary_cross_entropy(opacity.clamp(1e-5, 1 - 1e-5), self.mask.to(image)[None])
        return {"ref_rgb": self.rgb_weight * rgb, "ref_mask": self.mask_weight * mask}
