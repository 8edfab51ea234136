import torch
from torch import nn

from backend.render.camera import camera_rays, orbit_cameras
from backend.render.shading import Views, fixed_views, shade
from backend.render.volume import ray_box, render_volume


class SphereField(nn.Module):
    """Constant density inside a sphere, colour = red; the NeRFField interface the renderer uses."""

    def __init__(self, radius: float = 0.5, density: float = 200.0) -> None:
        super().__init__()
        self.radius, self.value = radius, density
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        d = self.value * torch.sigmoid((self.radius - x.norm(dim=-1)) * 200) + self.dummy
        return d, torch.tensor([1.0, 0.0, 0.0]).expand(x.shape[0], 3)

    def with_gradient(self, x):
        s = torch.sigmoid((self.radius - x.norm(dim=-1)) * 200)
        d, albedo = self.forward(x)
        grad = (self.value * s * (1 - s) * 200)[:, None] * -torch.nn.functional.normalize(x, dim=-1)
        return d, albedo, grad

    def occupied(self, x):
        return torch.ones(x.shape[0], dtype=torch.bool)


def test_ray_box():
    near, far = ray_box(torch.tensor([[0.0, 0, 3], [0, 3, 3]]), torch.tensor([[0.0, 0, -1], [0, 0, -1]]), 1.0)
    assert torch.allclose(near[0], torch.tensor(2.0)) and torch.allclose(far[0], torch.tensor(4.0))
    assert far[1] <= near[1]  # misses the box


def test_volume_render_sphere_opacity_and_depth():
    cams = orbit_cameras(10.0, 30.0, 2.5, 40.0, 32)
    out = render_volume(SphereField(), fixed_views(cams), 256, None, 1.0, need_normals=True)
    o, d = camera_rays(cams)
    # analytic ray-sphere hit
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - 0.25
    disc = b * b - c
    hit = disc > 0.02
    miss = disc < -0.06
    t_hit = -b - disc.clamp(min=0).sqrt()
    assert (out.opacity[..., 0][hit] > 0.98).all() and (out.opacity[..., 0][miss] < 0.02).all()
    assert (out.depth[..., 0][hit] - t_hit[hit]).abs().max() < 0.03
    # colour: red on white background
    assert torch.allclose(out.image[hit], torch.tensor([1.0, 0.0, 0.0]).expand_as(out.image[hit]), atol=0.05)
    # normals point outwards, towards the camera on the visible side
    p = o + d * t_hit[..., None]
    n_true = torch.nn.functional.normalize(p, dim=-1)
    assert (out.normal[hit] * n_true[hit]).sum(-1).mean() > 0.95


def test_shading_modes():
    cams = orbit_cameras(0.0, 0.0, 2.5, 40.0, 2)
    albedo = torch.full((1, 2, 2, 3), 0.8)
    normal = torch.tensor([0.0, 0.0, 1.0]).expand(1, 2, 2, 3)
    facing = Views(cams, torch.tensor([[0.0, 0.0, 1.0]]), torch.ones(1, 3), "lambertian", 0.3)
    behind = Views(cams, torch.tensor([[0.0, 0.0, -1.0]]), torch.ones(1, 3), "lambertian", 0.3)
    assert torch.allclose(shade(albedo, normal, facing), albedo)
    assert torch.allclose(shade(albedo, normal, behind), albedo * 0.3)
    facing.shading = "textureless"
    assert torch.allclose(shade(albedo, normal, facing), torch.ones_like(albedo))
    facing.shading = "normal"
    assert torch.allclose(shade(albedo, normal, facing), normal * 0.5 + 0.5)
