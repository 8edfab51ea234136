"""Geometry regularisers: mesh normal consistency and Laplacian smoothness (phase II),
tet-edge sign-change entropy (against floaters), NeRF orientation and z-variance (phase I).
Each returns a scalar tensor."""
from __future__ import annotations

import torch

from .mesh import face_normals


def _edge_face_pairs(faces: torch.Tensor) -> torch.Tensor:
    """[P,2] pairs of faces that share an edge."""
    f = faces.shape[0]
    edges = torch.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), dim=-1).values
    key = edges[:, 0] * (int(faces.max()) + 1 if f else 1) + edges[:, 1]
    order = torch.argsort(key)
    k = key[order]
    same = k[1:] == k[:-1]
    fid = torch.arange(f, device=faces.device).repeat_interleave(3)[order]
    return torch.stack([fid[:-1][same], fid[1:][same]], dim=-1)


def normal_consistency(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Mean (1 - cos) between the normals of faces sharing an edge."""
    pairs = _edge_face_pairs(faces)
    if pairs.numel() == 0:
        return verts.sum() * 0
    n = face_normals(verts, faces)
    return (1 - (n[pairs[:, 0]] * n[pairs[:, 1]]).sum(-1)).mean()


def laplacian_smoothness(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of each vertex to the mean of its neighbours (uniform weights)."""
    e = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    e = torch.cat([e, e.flip(-1)])
    acc = torch.zeros_like(verts).index_add(0, e[:, 0], verts[e[:, 1]])
    deg = torch.zeros(verts.shape[0], device=verts.device).index_add(0, e[:, 0], torch.ones(e.shape[0], device=verts.device))
    used = deg > 0
    return ((verts - acc / deg.clamp(min=1)[:, None])[used] ** 2).sum(-1).mean()


def sdf_sign_entropy(sdf: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on tet edges whose ends change sign (DMTet / Magic3D): pushes the
    SDF towards few, clean zero crossings and removes floaters."""
    a, b = sdf[edges[:, 0]], sdf[edges[:, 1]]
    diff = (a > 0) != (b > 0)
    if not diff.any():
        return sdf.sum() * 0
    a, b = a[diff], b[diff]
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    return bce(a, (b > 0).float()) + bce(b, (a > 0).float())


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
