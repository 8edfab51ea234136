"""Camera and coordinate conventions: the one place they are defined.

World frame (= glTF's): right-handed, +Y up, the object's front faces +Z.
Blender's frame is +Z up; the glTF importer maps a glTF point (x, y, z) to Blender
(x, -z, y), so glTF's front (+Z) becomes Blender's -Y (Blender's "Front" view).

Orbit cameras: elevation (degrees) above the XZ plane, azimuth (degrees) from +Z toward +X,
radius from the origin, vertical fov in degrees. Azimuth 0 looks at the front, 90 at the
right side (+X).

Camera space is OpenGL's: the camera looks down -Z, +Y up, +X right. Clip space is
OpenGL's too (w = -z_cam). Images are row-major with row 0 at the TOP (NDC y = +1) and
pixel centres at (i + 0.5) / W * 2 - 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..schema import Span, setting


@dataclass
class Cameras:
    """A batch of B pinhole cameras.

    c2w: [B,4,4] camera-to-world; proj: [B,4,4] OpenGL projection; mvp: [B,4,4] world-to-clip;
    elevation, azimuth, radius: [B] in degrees / world units (kept for pose-conditioned models);
    fov: [B] vertical fov in degrees; height, width: image size in pixels.
    """

    c2w: torch.Tensor
    proj: torch.Tensor
    elevation: torch.Tensor
    azimuth: torch.Tensor
    radius: torch.Tensor
    fov: torch.Tensor
    height: int
    width: int

    @property
    def w2c(self) -> torch.Tensor:
        return torch.linalg.inv(self.c2w)

    @property
    def mvp(self) -> torch.Tensor:
        return self.proj @ self.w2c

    @property
    def position(self) -> torch.Tensor:
        return self.c2w[:, :3, 3]

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(self.c2w.to(device), self.proj.to(device), self.elevation.to(device),
                       self.azimuth.to(device), self.radius.to(device), self.fov.to(device),
                       self.height, self.width)

    def index(self, idx: slice | list[int] | torch.Tensor) -> "Cameras":
        return Cameras(self.c2w[idx], self.proj[idx], self.elevation[idx], self.azimuth[idx],
                       self.radius[idx], self.fov[idx], self.height, self.width)


def orbit_position(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor,
                   radius: torch.Tensor) -> torch.Tensor:
    """[B] angles (degrees) and radius -> [B,3] world positions on the orbit."""
    el = torch.deg2rad(elevation_deg)
    az = torch.deg2rad(azimuth_deg)
    return torch.stack([radius * torch.cos(el) * torch.sin(az),
                        radius * torch.sin(el),
                        radius * torch.cos(el) * torch.cos(az)], dim=-1)


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None,
            up: torch.Tensor | None = None) -> torch.Tensor:
    """[B,3] eye positions -> [B,4,4] camera-to-world matrices looking at target (origin)."""
    target = torch.zeros_like(eye) if target is None else target.expand_as(eye)
    up = eye.new_tensor([0.0, 1.0, 0.0]).expand_as(eye) if up is None else up.expand_as(eye)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    # At the poles forward is parallel to up: fall back to -Z as "up" there.
    degenerate = torch.linalg.cross(forward, up).norm(dim=-1, keepdim=True) < 1e-6
    up = torch.where(degenerate, eye.new_tensor([0.0, 0.0, -1.0]).expand_as(eye), up)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up), dim=-1)
    true_up = torch.linalg.cross(right, forward)
    c2w = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = true_up
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = eye
    return c2w


def perspective(fov_deg: torch.Tensor, aspect: float = 1.0, near: float = 0.1,
                far: float = 100.0) -> torch.Tensor:
    """[B] vertical fov in degrees -> [B,4,4] OpenGL projection matrices."""
    f = 1.0 / torch.tan(torch.deg2rad(fov_deg) / 2)
    proj = torch.zeros(fov_deg.shape[0], 4, 4, dtype=fov_deg.dtype, device=fov_deg.device)
    proj[:, 0, 0] = f / aspect
    proj[:, 1, 1] = f
    proj[:, 2, 2] = -(far + near) / (far - near)
    proj[:, 2, 3] = -2 * far * near / (far - near)
    proj[:, 3, 2] = -1.0
    return proj


def orbit_cameras(elevation: torch.Tensor, azimuth: torch.Tensor, radius: torch.Tensor,
                  fov: torch.Tensor, height: int, width: int | None = None) -> Cameras:
    """Orbit cameras looking at the origin; all angle tensors [B] in degrees."""
    width = height if width is None else width
    elevation, azimuth, radius, fov = (torch.as_tensor(v, dtype=torch.float32).reshape(-1)
                                       for v in (elevation, azimuth, radius, fov))
    b = max(t.shape[0] for t in (elevation, azimuth, radius, fov))
    elevation, azimuth, radius, fov = (t.expand(b).clone() for t in (elevation, azimuth, radius, fov))
    c2w = look_at(orbit_position(elevation, azimuth, radius))
    return Cameras(c2w, perspective(fov, width / height), elevation, azimuth, radius, fov,
                   height, width)


@dataclass(frozen=True, kw_only=True)
class CameraRange:
    """Sampling ranges of a phase (a preset's phaseN.cameras; degrees, world units): each a
    [lo, hi] pair, a single number for a fixed value."""

    elevation: Span = setting(lo=-90.0, hi=90.0)
    azimuth: Span = setting(lo=-720.0, hi=720.0)
    radius: Span = setting(lo=0.1, hi=100.0)
    fov: Span = setting(lo=1.0, hi=170.0)

    def framed_radius(self) -> float:
        """The radius of the ball about the origin that every camera of the range frames
        whole (square images): the nearest radius times the sine of the narrowest half-fov."""
        return self.radius[0] * math.sin(math.radians(self.fov[0]) / 2)

    def four_views(self, resolution: int) -> Cameras:
        """Front, right, back, left (azimuths 0, 90, 180, 270) at the middle of the ranges."""
        mid = lambda v: (v[0] + v[1]) / 2  # noqa: E731
        return orbit_cameras(mid(self.elevation), torch.tensor((0.0, 90.0, 180.0, 270.0)), mid(self.radius),
                             mid(self.fov), resolution)

    def sample(self, batch: int, resolution: int, generator: torch.Generator) -> Cameras:
        """Uniform azimuth/radius/fov; elevation uniform on the sphere's band (no pole bias)."""
        u = torch.rand(4, batch, generator=generator)
        s0, s1 = (math.sin(math.radians(e)) for e in self.elevation)
        elevation = torch.rad2deg(torch.asin(s0 + (s1 - s0) * u[0]))
        lerp = lambda r, t: r[0] + (r[1] - r[0]) * t  # noqa: E731
        return orbit_cameras(elevation, lerp(self.azimuth, u[1]), lerp(self.radius, u[2]),
                             lerp(self.fov, u[3]), resolution)


def pixel_centers_ndc(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[H,W,2] NDC (x, y) of pixel centres, row 0 at the top (y = +1 side)."""
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 - 1
    ys = 1 - (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)


def camera_rays(cams: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through pixel centres: origins and unit directions, both [B,H,W,3]."""
    ndc = pixel_centers_ndc(cams.height, cams.width, cams.c2w.device)
    tan_half = torch.tan(torch.deg2rad(cams.fov) / 2)[:, None, None]
    aspect = cams.width / cams.height
    d_cam = torch.stack([ndc[..., 0] * tan_half * aspect, ndc[..., 1] * tan_half,
                         -torch.ones_like(ndc[..., 0]).expand_as(ndc[..., 1] * tan_half)], dim=-1)
    dirs = torch.einsum("bij,bhwj->bhwi", cams.c2w[:, :3, :3], d_cam)
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    origins = cams.position[:, None, None, :].expand_as(dirs)
    return origins, dirs


def relative_pose(cams: Cameras, ref_elevation: float, ref_azimuth: float,
                  ref_radius: float) -> torch.Tensor:
    """Zero-1-to-3 pose of each camera relative to the reference view: [B,4] =
    [Δelevation (rad), sin Δazimuth, cos Δazimuth, Δradius]. Zero-1-to-3 measures elevation
    as polar angle from +Y, so Δpolar = -Δelevation."""
    d_polar = -torch.deg2rad(cams.elevation - ref_elevation)
    d_az = torch.deg2rad(cams.azimuth - ref_azimuth)
    return torch.stack([d_polar, torch.sin(d_az), torch.cos(d_az), cams.radius - ref_radius], dim=-1)


def world_to_camera_dirs(dirs: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """[B,H,W,3] world directions -> camera space (OpenGL: +x right, +y up, +z towards the
    viewer) of each of the B cameras c2w [B,4,4]."""
    return torch.einsum("bji,bhwj->bhwi", c2w[:, :3, :3], dirs)


def normals_from_depth(depth: torch.Tensor) -> torch.Tensor:
    """[B,H,W] depth in front of the camera (larger = farther), in units of the image width,
    -> [B,H,W,3] unit camera-space normals facing the viewer. A surface point is
    (u, v, -depth) with u to the right and v up (image row 0 is the top, so v = -row);
    its normal is (dz/du, dz/dv, 1) normalised (central differences, edges replicated)."""
    w = depth.shape[-1]
    pad = torch.nn.functional.pad(depth[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    dz_du = (pad[:, 1:-1, 2:] - pad[:, 1:-1, :-2]) * (w / 2)
    dz_dv = -(pad[:, 2:, 1:-1] - pad[:, :-2, 1:-1]) * (w / 2)
    return torch.nn.functional.normalize(torch.stack([dz_du, dz_dv, torch.ones_like(depth)], -1), dim=-1)
