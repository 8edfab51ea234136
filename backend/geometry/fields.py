"""Neural fields on the hash grid: the phase-I NeRF (density + albedo) and the phase-III
texture field (albedo, and with a PBR head roughness and metallic), which starts as a copy
of the NeRF's albedo branch.

Points [N,3] in [-bound, bound]^3; density [N] >= 0 (softplus, plus a Gaussian blob bias
so optimisation starts from a centred blob; 0 outside the NeRF's region, the ball every
phase-I camera frames whole, where no view tells a floater from empty space); albedo
[N,3] in [0,1]; a PBR texture field gives [N,5]: albedo, roughness, metallic in [0,1]
(render/mesh_renderer.Material).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..schema import setting
from .hashgrid import HashGrid, mlp, mlp_input_gradient


@dataclass(frozen=True, kw_only=True)
class FieldConfig:
    """The hash grid and MLPs of a field (a preset's phase1.field; phase III's texture field
    uses the same grid): levels from base_res to max_res cells per side, 2^log2_table
    entries a level of `features` each; `hidden` units per MLP layer. The NeRF starts as a
    Gaussian blob of peak density blob_density and radius blob_radius (world units), and
    skips empty cells of an occupancy grid of occupancy_res per side."""

    levels: int = setting(lo=1, hi=32)
    log2_table: int = setting(lo=8, hi=26)
    max_res: int = setting(lo=2, hi=65536)
    base_res: int = setting(16, lo=2, hi=4096)
    features: int = setting(2, lo=1, hi=8)
    hidden: int = setting(64, lo=1, hi=1024)
    blob_density: float = setting(10.0, lo=0.0, hi=1e4)
    blob_radius: float = setting(0.5, lo=1e-3, hi=100.0)
    occupancy_res: int = setting(32, lo=4, hi=512)


def _grid(cfg: FieldConfig, bound: float, fused: bool) -> HashGrid:
    return HashGrid(levels=cfg.levels, features=cfg.features, log2_table=cfg.log2_table,
                    base_res=cfg.base_res, max_res=cfg.max_res, bound=bound, fused=fused)


class TextureField(nn.Module):
    def __init__(self, encoding: HashGrid, hidden: int = 64) -> None:
        super().__init__()
        self.encoding = encoding
        self.albedo_net = mlp(encoding.out_dim, 3, hidden, 2)
        self.material_net: nn.Sequential | None = None

    @staticmethod
    def from_config(cfg: FieldConfig, bound: float = 1.0, fused: bool = True) -> "TextureField":
        """fused: the hash grid may take its Triton kernels (runtime.fused_grid)."""
        return TextureField(_grid(cfg, bound, fused), cfg.hidden)

    def add_material(self, roughness: float, metallic: float) -> None:
        """Give the field a roughness/metallic head that starts at these values everywhere
        (last layer zero, its bias their logits: the albedo it already has is kept)."""
        ref = self.albedo_net[0]
        with torch.device(ref.weight.device):  # made where the field is (also the estimator's fake device)
            net = mlp(self.encoding.out_dim, 2, ref.out_features, 2)
            start = torch.tensor([roughness, metallic]).clamp(0.02, 0.98)
        with torch.no_grad():
            net[-1].weight.zero_()
            net[-1].bias.copy_(torch.log(start / (1 - start)))
        self.material_net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoding(x)
        albedo = torch.sigmoid(self.albedo_net(h))
        if self.material_net is None:
            return albedo
        return torch.cat([albedo, torch.sigmoid(self.material_net(h))], -1)

    def fit(self, points: torch.Tensor, colors: torch.Tensor, steps: int, lr: float = 1e-2,
            batch: int = 1 << 14, seed: int = 0) -> float:
        """Project known colours into the field: MSE on points [N,3] / colours [N,3] in [0,1]
        (stylize and edit start from the input's look). -> final batch MSE."""
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        device = next(self.parameters()).device
        loss = torch.zeros(())
        for _ in range(steps):
            idx = torch.randint(0, points.shape[0], (min(batch, points.shape[0]),), generator=g)
            loss = torch.nn.functional.mse_loss(self(points[idx].to(device))[:, :3], colors[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return float(loss.detach())


class NeRFField(nn.Module):
    """One hash encoding shared by a density head and an albedo head. region: the radius
    of the ball about the origin outside which the density is 0 (None: the whole box)."""

    def __init__(self, encoding: HashGrid, hidden: int = 64, blob_density: float = 10.0,
                 blob_radius: float = 0.5, occupancy_res: int = 32, region: float | None = None) -> None:
        super().__init__()
        self.encoding = encoding
        self.density_net = mlp(encoding.out_dim, 1, hidden, 2)
        self.albedo_net = mlp(encoding.out_dim, 3, hidden, 2)
        self.blob_density, self.blob_radius, self.region = blob_density, blob_radius, region
        # Occupancy of a coarse grid over the box: samples in empty cells skip the field.
        self.register_buffer("occupancy", torch.ones(occupancy_res, occupancy_res, occupancy_res, dtype=torch.bool))

    @staticmethod
    def from_config(cfg: FieldConfig, bound: float = 1.0, fused: bool = True,
                    region: float | None = None) -> "NeRFField":
        """fused: the hash grid may take its Triton kernels (runtime.fused_grid)."""
        return NeRFField(_grid(cfg, bound, fused), cfg.hidden, cfg.blob_density, cfg.blob_radius, cfg.occupancy_res,
                         region)

    def density_bias(self, x: torch.Tensor) -> torch.Tensor:
        return self.blob_density * torch.exp(-0.5 * (x ** 2).sum(-1) / self.blob_radius ** 2)

    def _in_region(self, x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """value [N] or [N,k] of points x [N,3], 0 outside the region."""
        if self.region is None:
            return value
        inside = (x * x).sum(-1) <= self.region ** 2
        return torch.where(inside if value.dim() == 1 else inside[:, None], value, 0.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoding(x)
        raw = self.density_net(h)[:, 0] + self.density_bias(x)
        density = self._in_region(x, torch.nn.functional.softplus(raw - 1.0))
        return density, torch.sigmoid(self.albedo_net(h))

    def with_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """density [N], albedo [N,3] and the density's spatial gradient [N,3] in closed form
        (equal to autograd's to float precision; no double backward needed)."""
        h, lattice = self.encoding.encode(x)
        raw, dh = mlp_input_gradient(self.density_net, h)
        draw = self.encoding.spatial_vjp(lattice, dh)
        bias = self.density_bias(x)
        raw = raw + bias - 1.0
        dbias = bias[:, None] * (-x / self.blob_radius ** 2)
        grad = torch.sigmoid(raw)[:, None] * (draw + dbias)  # softplus' = sigmoid
        return (self._in_region(x, torch.nn.functional.softplus(raw)), torch.sigmoid(self.albedo_net(h)),
                self._in_region(x, grad))

    def density(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.density_net(self.encoding(x))[:, 0] + self.density_bias(x)
        return self._in_region(x, torch.nn.functional.softplus(raw - 1.0))

    def occupied(self, x: torch.Tensor) -> torch.Tensor:
        """[N,3] -> [N] bool: the point's occupancy cell is marked occupied."""
        res = self.occupancy.shape[0]
        cell = ((x / self.encoding.bound + 1) / 2 * res).long().clamp(0, res - 1)
        return self.occupancy[cell[:, 0], cell[:, 1], cell[:, 2]]

    @torch.no_grad()
    def update_occupancy(self, threshold: float, generator: torch.Generator | None = None) -> None:
        """Mark cells whose density at a jittered point exceeds threshold, dilated by one cell
        so surfaces growing into neighbours are not cut off."""
        res, bound = self.occupancy.shape[0], self.encoding.bound
        ax = torch.arange(res, device=self.occupancy.device)
        ijk = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1).reshape(-1, 3)
        jitter = torch.rand(ijk.shape, generator=generator).to(ijk.device) if generator is not None else 0.5
        pts = ((ijk + jitter) / res * 2 - 1) * bound
        occ = torch.cat([self.density(p) for p in pts.split(1 << 16)]) > threshold
        occ = occ.reshape(1, 1, res, res, res).float()
        self.occupancy.copy_(torch.nn.functional.max_pool3d(occ, 3, 1, 1)[0, 0] > 0)

    def texture_field(self) -> TextureField:
        """A texture field initialised with this NeRF's albedo (encoding + head copied)."""
        tex = TextureField(copy.deepcopy(self.encoding))
        tex.albedo_net = copy.deepcopy(self.albedo_net)
        return tex
