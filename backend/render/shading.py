"""View batches (cameras + light + background + shading mode) and shading functions.

All images are [B,H,W,C] float in [0,1]; normals are world-space unit vectors.
Shading modes: "albedo" (unlit colour), "lambertian" (the lit mode: colour under a
point-at-infinity light plus ambient; a material with roughness and metallic is lit by the
glTF BRDF of brdf.py instead), "textureless" (white under the same light, Lambertian),
"normal" (normal map (n+1)/2).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch

from ..errors import ConfigError
from ..schema import setting
from .brdf import ambient_reflectance, metallic_roughness
from .camera import CameraRange, Cameras

SHADING_MODES = ("albedo", "lambertian", "textureless", "normal")
Background = Literal["white", "black", "grey", "random"]


@dataclass(frozen=True, kw_only=True)
class ShadingMix:
    """How often a phase draws each shading mode (a preset's phaseN.shading): relative
    weights, at least one of them > 0."""

    albedo: float = setting(0.0, lo=0.0)
    lambertian: float = setting(0.0, lo=0.0)
    textureless: float = setting(0.0, lo=0.0)
    normal: float = setting(0.0, lo=0.0)

    def check(self, path: str) -> None:
        if not any(self.weights().values()):
            raise ConfigError(f"{path}: give at least one shading mode a weight > 0 ({', '.join(SHADING_MODES)})",
                              path)

    def weights(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class Frame:
    """What a phase renders for one batch of views: image [B,H,W,3] in [0,1], opacity
    [B,H,W,1] in [0,1]; when asked for geometry also depth [B,H,W,1] (> 0 on the surface:
    view-space z for meshes, expected ray distance for volumes) and normal [B,H,W,3]
    (world, unit)."""

    image: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor | None = None
    normal: torch.Tensor | None = None


Normals = Literal["vertex", "face"]


@dataclass
class Views:
    """What one optimisation step renders: B cameras, a light direction [B,3] (unit, towards
    the light), a background colour [B,3] in [0,1], one shading mode for the batch, and how a
    mesh drawn through them gets its normals (render/mesh_renderer.render_mesh). A geometry
    phase sets its surface's (phases.GeometryPhase.shaded), so the references it is compared
    with in those views (the oracle's target, the identity views) are drawn alike."""

    cams: Cameras
    light_dir: torch.Tensor
    background: torch.Tensor
    shading: str = "albedo"
    ambient: float = 0.3
    normals: Normals = "vertex"

    def __len__(self) -> int:
        return len(self.cams)

    def to(self, device: torch.device | str) -> "Views":
        return replace(self, cams=self.cams.to(device), light_dir=self.light_dir.to(device),
                       background=self.background.to(device))

    def index(self, idx: slice | list[int]) -> "Views":
        return replace(self, cams=self.cams.index(idx), light_dir=self.light_dir[idx], background=self.background[idx])

    def with_normals(self, normals: Normals) -> "Views":
        return self if normals == self.normals else replace(self, normals=normals)


def sample_views(cam_range: CameraRange, batch: int, resolution: int, generator: torch.Generator,
                 shading: ShadingMix, background: list[float] | str = "white",
                 ambient: float = 0.3) -> Views:
    """Random cameras from the range; light near the camera (within 45 degrees); shading mode
    drawn from the mix; background a colour, "white", "black", "grey" or "random"."""
    cams = cam_range.sample(batch, resolution, generator)
    to_cam = torch.nn.functional.normalize(cams.position, dim=-1)
    jitter = torch.randn(batch, 3, generator=generator) * 0.5
    light = torch.nn.functional.normalize(to_cam + jitter, dim=-1)
    # modes given probability 0 are left out: they would change the generator's stream
    modes, probs = zip(*sorted((m, p) for m, p in shading.weights().items() if p > 0))
    mode = modes[int(torch.multinomial(torch.tensor(probs, dtype=torch.float), 1, generator=generator))]
    return Views(cams, light, background_colors(background, batch, generator), mode, ambient)


def fixed_views(cams: Cameras, shading: str = "albedo", background: list[float] | str = "white",
                ambient: float = 0.3) -> Views:
    """Deterministic views (evaluation, previews): light from the camera."""
    light = torch.nn.functional.normalize(cams.position, dim=-1)
    return Views(cams, light, background_colors(background, len(cams), None), shading, ambient)


def background_colors(spec: list[float] | str, batch: int, generator: torch.Generator | None) -> torch.Tensor:
    if spec == "random":
        return torch.rand(batch, 3, generator=generator)
    named = {"white": [1.0, 1.0, 1.0], "black": [0.0, 0.0, 0.0], "grey": [0.5, 0.5, 0.5]}
    color = named[spec] if isinstance(spec, str) else spec
    return torch.tensor(color, dtype=torch.float32).expand(batch, 3).clone()


def shade(albedo: torch.Tensor, normal: torch.Tensor, views: Views, surface: torch.Tensor | None = None,
          to_viewer: torch.Tensor | None = None) -> torch.Tensor:
    """albedo [...,3] in [0,1], normal [...,3] unit, with a leading batch dim B -> colour
    [...,3] in [0,1]. The light of batch item b applies to albedo[b]. With `surface`
    ([...,2] roughness, metallic in [0,1]) and `to_viewer` ([...,3] unit, surface to
    camera) the lit mode uses the glTF metallic-roughness BRDF."""
    if views.shading == "normal":
        return normal * 0.5 + 0.5
    if views.shading == "albedo":
        return albedo
    light = views.light_dir.reshape(views.light_dir.shape[0], *([1] * (normal.dim() - 2)), 3).to(normal)
    if views.shading == "lambertian" and surface is not None:
        roughness, metallic = surface[..., :1], surface[..., 1:2]
        direct = metallic_roughness(albedo, roughness, metallic, normal, light.expand_as(normal), to_viewer)
        return (views.ambient * ambient_reflectance(albedo, metallic) + (1 - views.ambient) * direct).clamp(0, 1)
    diffuse = (normal * light).sum(-1, keepdim=True).clamp(min=0)
    lit = views.ambient + (1 - views.ambient) * diffuse
    base = torch.ones_like(albedo) if views.shading == "textureless" else albedo
    return base * lit


def composite(color: torch.Tensor, mask: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """color [B,H,W,C] premultiplied by nothing, mask/opacity [B,H,W,1], background [B,C]."""
    return color * mask + background[:, None, None, :] * (1 - mask)
