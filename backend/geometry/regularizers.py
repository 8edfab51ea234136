"""Geometry regularisers: mesh normal consistency and Laplacian smoothness (phase II),
tet-edge sign-change entropy (against floaters), NeRF orientation and z-variance (phase I).
Each returns a scalar tensor."""
from __future__ import annotations

import torch

from .mesh import face_normals


# Each term masks instead of gathering a data-dependent subset: on CUDA such a subset's size
# is a host sync, and the DMTet's mesh changes every step.

def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values where mask holds (0 where it never does)."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)


def normal_consistency(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Mean (1 - cos) between the normals of faces sharing an edge: each face's three edges
    sorted by a key, neighbours in that order that are the same edge make a pair."""
    edges = torch.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).long(), dim=-1).values
    key = edges[:, 0] * verts.shape[0] + edges[:, 1]
    order = torch.argsort(key)
    same = key[order][1:] == key[order][:-1]
    fid = order // 3  # the face of each sorted edge
    n = face_normals(verts, faces)
    return _masked_mean(1 - (n[fid[:-1]] * n[fid[1:]]).sum(-1), same)


def laplacian_smoothness(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of each vertex to the mean of its neighbours (uniform weights),
    over the vertices some face uses."""
    e = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    e = torch.cat([e, e.flip(-1)])
    acc = torch.zeros_like(verts).index_add(0, e[:, 0], verts[e[:, 1]])
    deg = torch.zeros(verts.shape[0], device=verts.device).index_add(0, e[:, 0], torch.ones(e.shape[0], device=verts.device))
    return _masked_mean(((verts - acc / deg.clamp(min=1)[:, None]) ** 2).sum(-1), deg > 0)


def sdf_sign_entropy(sdf: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on tet edges whose ends change sign (DMTet / Magic3D): pushes the
    SDF towards few, clean zero crossings and removes floaters. Each of the two terms is a
    mean over those edges."""
    a, b = sdf[edges[:, 0]], sdf[edges[:, 1]]
    diff = (a > 0) != (b > 0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    per_edge = bce(a, (b > 0).float(), reduction="none") + bce(b, (a > 0).float(), reduction="none")
    return _masked_mean(per_edge, diff)


def orientation(weights: torch.Tensor, normals: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Ref-NeRF orientation loss: sum_i w_i max(0, n_i . d)^2, mean over rays.
    weights [R,S], normals [R,S,3], dirs [R,3]."""
    facing = (normals * dirs[:, None, :]).sum(-1).clamp(min=0)
    return (weights.detach() * facing ** 2).sum(-1).mean()


def z_variance(weights: torch.Tensor, t_vals: torch.Tensor, opacity_threshold: float = 0.5) -> torch.Tensor:
    """HiFA L_nz: variance of sample depths under the normalised ray weights, only on rays
    whose opacity exceeds the threshold. weights, t_vals: [R,S]."""
    opacity = weights.sum(-1)
    keep = (opacity > opacity_threshold).to(weights.dtype)  # a weight, not a selection: no host sync
    w = weights / opacity.clamp(min=opacity_threshold)[:, None]  # the clamp only touches rays not kept
    mean = (w * t_vals).sum(-1, keepdim=True)
    return ((w * (t_vals - mean) ** 2).sum(-1) * keep).sum() / keep.sum().clamp(min=1)
