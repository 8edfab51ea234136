"""Reference-view loss (XBind Eq. 11): at the reference camera the render must show the
reference image x_r inside its mask m and match the mask itself:
    ω_rgb ||m ⊙ (x_r - x̂_r)||² + ω_mask ||m - M(x̂_r)||²,
implemented as MSE(rgb, x_r·m + bg·(1-m)) + BCE(opacity, m) as in the reference code, so
the background outside the mask is pulled to the render's background colour.

The same loss over K views of an existing mesh is the identity loss of stylize / edit
(identity_views): it keeps what the prompt does not change. Either is a phase's term as an
Anchor (a Guidance on its own views).
"""
from __future__ import annotations

import torch

from ..geometry.mesh import Mesh
from ..render.camera import orbit_cameras
from ..render.mesh_material import render_target  # the same rendering the oracle uses for its targets
from ..render.raster import Rasterizer
from ..render.shading import Background, Frame, Normals, Views, fixed_views


class RefView:
    def __init__(self, rgba: torch.Tensor, elevation: float = 0.0, azimuth: float | list[float] = 0.0,
                 radius: float = 2.5, fov: float = 40.0, rgb_weight: float = 1.0, mask_weight: float = 0.1,
                 shading: str = "albedo") -> None:
        """rgba: [H,W,4] (or [K,H,W,4] with K azimuths) in [0,1], alpha = foreground mask m.
        The preset's weight scales both terms (threestudio's Magic123 1000 / 100 is weight
        1000 with these defaults); shading: how its images were made and are rendered."""
        rgba = rgba if rgba.dim() == 4 else rgba[None]
        self.rgb, self.mask = rgba[..., :3], rgba[..., 3:4]
        self.pose = (elevation, azimuth, radius, fov)
        self.rgb_weight, self.mask_weight, self.shading = rgb_weight, mask_weight, shading

    def at_most(self, size: int) -> "RefView":
        """This anchor with its images area-averaged down to size x size when larger: a phase
        renders it no finer than its own training views (phase I at 128² renders a quarter
        of the samples a 256² reference would cost)."""
        if self.rgb.shape[1] <= size:
            return self
        cache = self.__dict__.setdefault("_smaller", {})
        if size not in cache:
            rgba = torch.cat([self.rgb, self.mask], -1).permute(0, 3, 1, 2)
            small = torch.nn.functional.interpolate(rgba, (size, size), mode="area").permute(0, 2, 3, 1)
            el, az, radius, fov = self.pose
            cache[size] = RefView(small, el, az, radius, fov, self.rgb_weight, self.mask_weight, self.shading)
        return cache[size]

    def views(self, background: Background = "white") -> Views:
        el, az, r, fov = self.pose
        cams = orbit_cameras(el, torch.as_tensor(az, dtype=torch.float32), r, fov, self.rgb.shape[1], self.rgb.shape[2])
        return fixed_views(cams, self.shading, background)

    def __call__(self, image: torch.Tensor, opacity: torch.Tensor, views: Views) -> dict[str, torch.Tensor]:
        """image [K,H,W,3], opacity [K,H,W,1] rendered from self.views()."""
        bg = views.background.to(image)[:, None, None, :]
        m = self.mask.to(image)
        rgb = torch.nn.functional.mse_loss(image, self.rgb.to(image) * m + bg * (1 - m))
        mask = torch.nn.functional.binary_cross_entropy(opacity.clamp(1e-5, 1 - 1e-5), m)
        return {"rgb": self.rgb_weight * rgb, "mask": self.mask_weight * mask}


class Anchor:
    """A reference-view loss as a phase's term: known views (keyed by the shading they were
    made in; None: one that answers every phase), at most at the phase's resolution, which
    the phase renders at their own cameras; reports "rgb" and "mask"."""

    needs_geometry = False
    generator = None  # deterministic

    def __init__(self, refs: dict[str | None, RefView], resolution: int) -> None:
        self.refs = {shading: ref.at_most(resolution) for shading, ref in refs.items()}
        self._ref: RefView | None = None

    def views(self, shading: str, background: Background) -> Views | None:
        """The views of the anchor made in the phase's shading (or in any), for the call
        that follows."""
        self._ref = self.refs[shading] if shading in self.refs else self.refs[None]
        return self._ref.views(background)

    def __call__(self, frame: Frame, views: Views, step: int, total: int) -> dict[str, torch.Tensor]:
        return self._ref(frame.image, frame.opacity, views)


def identity_views(raster: Rasterizer, mesh: Mesh, count: int, resolution: int, shading: str,
                   normals: Normals = "vertex", elevation: float = 15.0) -> RefView:
    """The original mesh seen from `count` azimuths around it, in a phase's shading (albedo
    for texture phases, normal maps for geometry), as a K-view RefView ("identity"); normals:
    how the surface it is compared with is drawn (Views.normals)."""
    azimuths = [360.0 * i / count for i in range(count)]
    cams = orbit_cameras(elevation, torch.tensor(azimuths), 2.5, 40.0, resolution)
    views = fixed_views(cams, shading, "white").with_normals(normals)
    device = mesh.verts.device
    with torch.no_grad():
        image = render_target(raster, mesh, views.to(device), with_mask=True)
    return RefView(image.cpu(), elevation, azimuths, shading=shading)
