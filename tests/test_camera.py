import math

import pytest
import torch

from backend.render.camera import CameraRange, camera_rays, orbit_cameras, orbit_position, pixel_centers_ndc, relative_pose


def test_orbit_axes():
    # azimuth 0 = front (+Z), 90 = right (+X), elevation 90 = top (+Y)
    p = orbit_position(torch.tensor([0.0, 0.0, 90.0]), torch.tensor([0.0, 90.0, 0.0]), torch.tensor([2.0, 2.0, 2.0]))
    assert torch.allclose(p, torch.tensor([[0, 0, 2.0], [2.0, 0, 0], [0, 2.0, 0]]), atol=1e-5)


def test_camera_looks_at_origin_with_y_up():
    cams = orbit_cameras(30.0, 45.0, 3.0, 40.0, 32)
    c2w = cams.c2w[0]
    forward = -c2w[:3, 2]
    assert torch.allclose(forward, torch.nn.functional.normalize(-cams.position[0], dim=0), atol=1e-5)
    assert c2w[1, 1] > 0  # camera up has a positive world-Y component
    assert torch.allclose(c2w[:3, :3] @ c2w[:3, :3].T, torch.eye(3), atol=1e-5)
    assert torch.linalg.det(c2w[:3, :3]) > 0


def test_origin_projects_to_image_centre_and_up_is_row_zero():
    cams = orbit_cameras(0.0, 0.0, 2.5, 40.0, 64)
    pts = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.5, 0.0, 1.0]])
    clip = pts @ cams.mvp[0].T
    ndc = clip[:, :2] / clip[:, 3:]
    assert torch.allclose(ndc[0], torch.zeros(2), atol=1e-6)
    assert ndc[1, 1] > 0  # world +Y is NDC +y, i.e. towards row 0
    # NDC y of a point at height h, distance d: h / (d tan(fov/2))
    assert math.isclose(float(ndc[1, 1]), 0.5 / (2.5 * math.tan(math.radians(20))), rel_tol=1e-5)
    centres = pixel_centers_ndc(4, 4)
    assert centres[0, 0, 1] > 0 and centres[0, 0, 0] < 0  # row 0 is the top-left


def test_rays_match_projection():
    cams = orbit_cameras(20.0, -30.0, 2.5, 45.0, 16)
    origins, dirs = camera_rays(cams)
    p = origins[0, 3, 11] + 1.7 * dirs[0, 3, 11]
    clip = torch.cat([p, torch.ones(1)]) @ cams.mvp[0].T
    ndc = clip[:2] / clip[3]
    assert torch.allclose(ndc, pixel_centers_ndc(16, 16)[3, 11], atol=1e-5)


def test_relative_pose_zero123():
    cams = orbit_cameras(torch.tensor([0.0, 30.0]), torch.tensor([0.0, 90.0]), torch.tensor([2.0, 2.5]), 40.0, 8)
    pose = relative_pose(cams, 0.0, 0.0, 2.0)
    assert torch.allclose(pose[0], torch.tensor([0.0, 0.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(pose[1], torch.tensor([-math.radians(30), 1.0, 0.0, 0.5]), atol=1e-6)



@pytest.mark.parametrize("elevation", [-45.0, 0.0, 45.0])
def test_framed_radius_is_the_ball_every_camera_frames_whole(elevation):
    """Known answer: r sin(fov / 2); a view's ray through the middle of the frame's edge
    grazes that ball (projected, the ball's outline touches the frame's edge)."""
    cams = CameraRange(elevation=(-45.0, 45.0), azimuth=(-180.0, 180.0), radius=(2.5, 3.0), fov=(40.0, 60.0))
    r = cams.framed_radius()
    assert r == pytest.approx(2.5 * math.sin(math.radians(20.0)))
    cam = orbit_cameras(torch.tensor([elevation]), torch.tensor([30.0]), torch.tensor([2.5]), torch.tensor([40.0]), 8)
    # the ball's outline: points at r from the centre, perpendicular to the view's direction
    eye = cam.position[0]
    axis = -eye / eye.norm()
    ortho = torch.linalg.svd(torch.eye(3) - axis[:, None] * axis[None]).U[:, :2]
    phi = torch.linspace(0, 2 * math.pi, 64)
    # tangent points of the cone from the eye: at distance d from the eye, offset r cos, along axis r sin
    d = float(eye.norm())
    ring = (-axis * r * r / d)[None] + r * math.sqrt(1 - (r / d) ** 2) * (
        torch.cos(phi)[:, None] * ortho[:, 0] + torch.sin(phi)[:, None] * ortho[:, 1])
    clip = torch.cat([ring, torch.ones(64, 1)], 1) @ cam.mvp[0].T
    ndc = clip[:, :2] / clip[:, 3:]
    assert float(ndc.abs().max()) == pytest.approx(1.0, abs=1e-4)  # touches the frame's edge, never beyond
