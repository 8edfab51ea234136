"""Volume rendering of a density + albedo field along camera rays.

Stratified samples inside the ray's intersection with the box [-bound, bound]^3. Returns
[B,H,W,C] maps: image (shaded, over the background) in [0,1], opacity in [0,1], depth
(expected distance along the ray), normals (opacity-weighted, from -grad density), and the
per-sample weights / distances [R,S] for the z-variance loss plus per-sample normals and
ray directions for the orientation loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..geometry.fields import NeRFField
from .camera import camera_rays
from .shading import Views, composite, shade


@dataclass
class VolumeRender:
    image: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    normal: torch.Tensor | None
    weights: torch.Tensor
    t_vals: torch.Tensor
    sample_normals: torch.Tensor | None
    dirs: torch.Tensor


def ray_box(origins: torch.Tensor, dirs: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test: near/far [R] of rays [R,3] with the box; far <= near where rays miss."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (-bound - origins) * inv, (bound - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


def render_volume(field: NeRFField, views: Views, samples: int, generator: torch.Generator | None = None,
                  bound: float = 1.0, need_normals: bool = False) -> VolumeRender:
    cams = views.cams
    need_normals = need_normals or views.shading != "albedo"
    device = next(field.parameters()).device
    origins, dirs = (t.reshape(-1, 3).to(device) for t in camera_rays(cams))
    b, h, w = len(cams), cams.height, cams.width
    near, far = ray_box(origins, dirs, bound)
    hit = far > near
    far = torch.where(hit, far, near + 1e-3)
    jitter = (torch.rand(origins.shape[0], samples, generator=generator).to(device) if generator is not None
              else torch.full((origins.shape[0], samples), 0.5, device=device))
    steps = (torch.arange(samples, device=device)[None] + jitter) / samples
    t_vals = near[:, None] + (far - near)[:, None] * steps  # [R,S]
    delta = (far - near)[:, None] / samples * hit[:, None]
    pts = (origins[:, None] + dirs[:, None] * t_vals[..., None]).reshape(-1, 3)
    # Only samples on hit rays in occupied cells query the field; the rest are empty space.
    live = field.occupied(pts) & hit.repeat_interleave(samples)
    live_pts = pts[live]
    density = pts.new_zeros(pts.shape[0])
    albedo = pts.new_zeros(pts.shape[0], 3)
    sample_normals = None
    if need_normals:
        live_pts = live_pts.detach().requires_grad_(True)
        with torch.enable_grad():
            d_live, a_live = field(live_pts)
            grad = torch.autograd.grad(d_live.sum(), live_pts, create_graph=torch.is_grad_enabled())[0]
        sample_normals = pts.new_zeros(pts.shape[0], 3).index_put(
            (live,), torch.nn.functional.normalize(-grad, dim=-1, eps=1e-8)).reshape(-1, samples, 3)
    else:
        d_live, a_live = field(live_pts)
    density = density.index_put((live,), d_live).reshape(-1, samples)
    albedo = albedo.index_put((live,), a_live)
    alpha = 1 - torch.exp(-density * delta)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], dim=-1), dim=-1)[:, :-1]
    weights = alpha * trans  # [R,S]
    opacity = weights.sum(-1, keepdim=True)
    albedo = albedo.reshape(-1, samples, 3)
    normal = None
    if sample_normals is not None:
        normal = torch.nn.functional.normalize((weights[..., None] * sample_normals).sum(1), dim=-1, eps=1e-8)
    ray_albedo = (weights[..., None] * albedo).sum(1) / opacity.clamp(min=1e-6)
    shaded = shade(ray_albedo.reshape(b, h, w, 3),
                   normal.reshape(b, h, w, 3) if normal is not None else torch.zeros(b, h, w, 3, device=device),
                   views.to(device))
    opacity_map = opacity.reshape(b, h, w, 1)
    image = composite(shaded, opacity_map, views.background.to(device))
    depth = ((weights * t_vals).sum(-1, keepdim=True) / opacity.clamp(min=1e-6)).reshape(b, h, w, 1)
    return VolumeRender(image, opacity_map, depth, None if normal is None else normal.reshape(b, h, w, 3),
                        weights, t_vals, sample_normals, dirs)
