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
from torch._subclasses.fake_tensor import is_fake

from ..geometry.fields import NeRFField
from .camera import camera_rays
from .shading import Views, composite, shade
from .sizes import active, compact


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


CHUNK = 1 << 18  # samples per checkpointed field query: bounds what the backward recomputes at once


def query_field(field: NeRFField, pts: torch.Tensor, need_gradient: bool
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """density [N], albedo [N,3] and, if asked, the density's gradient [N,3] at points [N,3].

    While a graph is being built, the field runs in chunks under activation checkpointing:
    only each chunk's points and outputs are kept for backward, which recomputes the hash
    grid and MLPs chunk by chunk. (Without it the phase-I render kept about 5 KB per
    sample.) The gradient is the field's closed form, not autograd.grad, so nothing inside
    a chunk needs a double backward and the checkpoint frees everything it recomputes."""
    def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return field.with_gradient(x) if need_gradient else field(x)

    if not torch.is_grad_enabled() or pts.shape[0] == 0:
        out = run(pts)
    else:
        from torch.utils.checkpoint import checkpoint

        parts = [checkpoint(run, chunk, use_reentrant=False) for chunk in pts.split(CHUNK)]
        out = tuple(torch.cat(p) for p in zip(*parts))
    return (out[0], out[1], out[2] if need_gradient else None)


def render_volume(field: NeRFField, views: Views, samples: int, generator: torch.Generator | None = None,
                  bound: float = 1.0, need_normals: bool = False, dense: bool | None = None) -> VolumeRender:
    """dense: size the field query without reading the live count inside a step
    (render/sizes.py); None: so on CUDA (and the estimator's fake fields)."""
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
    occupied, n = field.occupied(pts) & hit.repeat_interleave(samples), pts.shape[0]
    sizes = active()
    if dense is None:
        dense = occupied.is_cuda or is_fake(occupied)
    if sizes is not None and dense:  # no count read (render/sizes.py)
        live, _ = compact(occupied, sizes.room("volume", occupied.sum(), n))
        pts = torch.cat([pts, pts.new_zeros(1, 3)])  # the spare row the unused slots read and write
    else:  # the count read here sizes the query (the CPU has no device to wait for)
        live = torch.nonzero(occupied).squeeze(1)
    live_pts = pts.index_select(0, live)
    d_live, a_live, g_live = query_field(field, live_pts, need_normals)
    sample_normals = None
    if need_normals:
        sample_normals = pts.new_zeros(pts.shape[0], 3).index_put(
            (live,), torch.nn.functional.normalize(-g_live, dim=-1, eps=1e-8))[:n].reshape(-1, samples, 3)
    density = pts.new_zeros(pts.shape[0]).index_put((live,), d_live)[:n].reshape(-1, samples)
    albedo = pts.new_zeros(pts.shape[0], 3).index_put((live,), a_live)[:n]
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
