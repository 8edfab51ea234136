"""The glTF 2.0 metallic-roughness BRDF (glTF spec, Appendix B) under one directional light
plus an ambient term: what phase III's PBR material is seen through and what a glTF
viewer shows for the exported metallicRoughnessTexture.

Inputs broadcast over leading dims: base colour [...,3] in [0,1], roughness and metallic
[...,1] in [0,1] (perceptual roughness; alpha = roughness^2), unit normal n, unit
direction to the light l and to the viewer v [...,3]. The light's radiance is pi, so a
white Lambertian surface facing it reflects 1 (the same scale as shading.py's
"lambertian": ambient + (1 - ambient) * n.l for a diffuse white).
"""
from __future__ import annotations

import math

import torch

DIELECTRIC_F0 = 0.04  # glTF's specular reflectance of non-metals at normal incidence
_MIN_ALPHA = 1e-3  # roughness 0 would make D a delta: a mirror that no light direction hits


def metallic_roughness(base: torch.Tensor, roughness: torch.Tensor, metallic: torch.Tensor, n: torch.Tensor,
                       light: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    """Reflected radiance [...,3] (>= 0, not clamped) of the light: pi * (f_diffuse +
    f_specular) * max(n.l, 0), with Schlick Fresnel, GGX D and the height-correlated Smith
    visibility term."""
    alpha = (roughness * roughness).clamp(min=_MIN_ALPHA)
    a2 = alpha * alpha
    h = torch.nn.functional.normalize(light + view, dim=-1, eps=1e-12)
    nl = (n * light).sum(-1, keepdim=True).clamp(min=0)
    nv = (n * view).sum(-1, keepdim=True).clamp(min=1e-4)
    nh = (n * h).sum(-1, keepdim=True).clamp(min=0)
    vh = (view * h).sum(-1, keepdim=True).clamp(min=0)
    f0 = DIELECTRIC_F0 + (base - DIELECTRIC_F0) * metallic
    fresnel = f0 + (1 - f0) * (1 - vh) ** 5
    c_diff = base * (1 - metallic)
    f_diffuse = (1 - fresnel) * c_diff / math.pi
    d = a2 / (math.pi * (nh * nh * (a2 - 1) + 1) ** 2)
    vis = 0.5 / (nl * (nv * nv * (1 - a2) + a2).sqrt() + nv * (nl * nl * (1 - a2) + a2).sqrt()).clamp(min=1e-6)
    f_specular = fresnel * d * vis
    return math.pi * (f_diffuse + f_specular) * nl


def ambient_reflectance(base: torch.Tensor, metallic: torch.Tensor) -> torch.Tensor:
    """[...,3] in [0,1]: what a uniform white environment of radiance 1 returns,
    approximated with the normal-incidence Fresnel term: (1 - f0) * c_diff + f0, i.e. the
    base colour for a metal and 0.96 * base + 0.04 for a dielectric."""
    f0 = DIELECTRIC_F0 + (base - DIELECTRIC_F0) * metallic
    return (1 - f0) * base * (1 - metallic) + f0
