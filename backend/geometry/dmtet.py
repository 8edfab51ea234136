"""DMTet: an SDF and a bounded vertex deformation on a run-time tet grid, extracted to a
triangle mesh by marching tetrahedra (differentiable in both); or, with surface "dual", the
same SDF lattice extracted by dual contouring (geometry/dual_contouring.py), a vertex per
patch of surface in a cell, which can hold a sharp edge that marching tets cuts off.

SDF negative inside. Marching tets: vertex position = grid vertex + tanh(deform) * cell / 2,
so a vertex never leaves its half-cell and tets never invert. Dual: deform is per cell, and
moves the cell's vertices by tanh(deform) * cell / 2 from the means of their crossings. The
grid's border vertices are held outside (OUTSIDE, not parameters): the grid's box is the
volume the object lies in, so a surface can neither touch the border nor be cut open by it.

The SDF at the grid vertices is fine_scale * (per-vertex values) plus, for each coarse level
r, level_scale * (an (r+1)^3 lattice over the same box, trilinearly upsampled). An optimiser
step moves each parameter by about lr, so the scales set how far one step moves the surface
at each level: coarse lattices move whole regions coherently (an edit that grows or bends
the object), while a small fine scale adds detail without the spikes that single-vertex
sign flips make. With no levels and fine_scale 1 it is the plain per-vertex DMTet.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from ..schema import setting
from .cleanup import cleanup
from .dual_contouring import dual_contour
from .tets import grid_surface, marching_tets, tet_edges, tet_grid


@dataclass(frozen=True, kw_only=True)
class SdfGridConfig:
    """The SDF's coarse levels (a preset's phase2.sdf_grid): their lattice resolutions,
    the scale of the levels and of the per-vertex values (the module's docstring); how its
    zero level set becomes triangles (surface: "tets" marching tets, "dual" dual contouring)."""

    levels: tuple[int, ...] = setting((), lo=2, hi=512)
    level_scale: float = setting(1.0, lo=0.0, hi=100.0)
    fine_scale: float = setting(1.0, lo=0.0, hi=100.0)
    surface: Literal["tets", "dual"] = setting("tets")


# The SDF held at the grid's border: the hand-over's clamp saturates at 1 (empty space);
# an edit's grid starts edit_margin of the object's size away from it.
OUTSIDE = 1.0


class DMTet(nn.Module):
    def __init__(self, res: int, lo: list[float], hi: list[float], levels: Sequence[int] = (),
                 level_scale: float = 1.0, fine_scale: float = 1.0, surface: str = "tets") -> None:
        super().__init__()
        verts, tets = tet_grid(res, lo, hi)
        self.res, self.level_scale, self.fine_scale = res, float(level_scale), float(fine_scale)
        self.surface = surface
        self.register_buffer("lo", torch.tensor(lo, dtype=torch.float32))
        self.register_buffer("hi", torch.tensor(hi, dtype=torch.float32))
        self.register_buffer("grid_verts", verts)
        self.register_buffer("tets", tets, persistent=False)
        ijk = torch.arange(res + 1)
        edge = (ijk == 0) | (ijk == res)
        border = edge[:, None, None] | edge[None, :, None] | edge[None, None, :]
        self.register_buffer("border", border.reshape(-1), persistent=False)
        self.sdf = nn.Parameter(torch.zeros(verts.shape[0]))
        self.levels = nn.ParameterList([nn.Parameter(torch.zeros(r + 1, r + 1, r + 1)) for r in levels])
        self.deform = nn.Parameter(torch.zeros(res ** 3 if surface == "dual" else verts.shape[0], 3))

    @staticmethod
    def from_config(res: int, lo: list[float], hi: list[float], cfg: SdfGridConfig | None) -> "DMTet":
        """cfg: a phase's sdf_grid, None for the plain per-vertex DMTet."""
        cfg = cfg or SdfGridConfig()
        return DMTet(res, lo, hi, cfg.levels, cfg.level_scale, cfg.fine_scale, cfg.surface)

    @property
    def cell(self) -> torch.Tensor:
        return (self.hi - self.lo) / self.res

    def vertices(self) -> torch.Tensor:
        return self.grid_verts + torch.tanh(self.deform) * self.cell / 2

    def values(self) -> torch.Tensor:
        """[V] SDF at the grid vertices (fine values plus the upsampled coarse levels; OUTSIDE
        on the border)."""
        sdf = self.sdf * self.fine_scale
        n = self.res + 1
        for lattice in self.levels:  # grid vertices are in i-j-k order, like the lattices
            up = torch.nn.functional.interpolate(lattice[None, None], size=(n, n, n), mode="trilinear",
                                                 align_corners=True)
            sdf = sdf + self.level_scale * up.reshape(-1)
        return torch.where(self.border, OUTSIDE, sdf)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> mesh verts [M,3], faces [K,3]."""
        if self.surface == "dual":
            return dual_contour(self.values(), self.res, self.lo, self.hi, torch.tanh(self.deform) * self.cell / 2)
        verts, sdf = self.vertices(), self.values()
        if self.uses_whole_grid():
            return marching_tets(verts, self.tets, sdf, self.edges())
        ids, crossing = grid_surface(sdf.detach(), self.res)
        return marching_tets(verts, self.tets[ids], sdf, crossing)

    # Marching over every tet with the grid's edge list (True), or over the tets of the cubes
    # the surface crosses, found each step (False: grid_surface). None: by device. A CPU spends
    # most of a step gathering over every tet; a GPU does that in well under a millisecond and
    # would pay grid_surface's host reads instead. The estimator, which stands for a GPU on
    # the CPU, sets True.
    whole_grid: bool | None = None

    def uses_whole_grid(self) -> bool:
        return self.sdf.device.type != "cpu" if self.whole_grid is None else self.whole_grid

    @torch.no_grad()
    def set_sdf(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.sdf.copy_(fn(self.grid_verts) / self.fine_scale)
        self.deform.zero_()
        for lattice in self.levels:
            lattice.zero_()

    def edges(self) -> torch.Tensor:
        """[E,2] unique tet-grid edges (marching tets, the sign-change entropy regulariser)."""
        if not hasattr(self, "_edges") or self._edges.device != self.tets.device:
            self._edges = tet_edges(self.tets, self.grid_verts.shape[0])
        return self._edges

    @staticmethod
    def from_state(state: dict) -> "DMTet":
        """Rebuild from a state dict (the grid box and the SDF levels are part of the state)."""
        meta = ("res", "level_res", "level_scale", "fine_scale", "dual")
        levels = state.get("level_res", torch.zeros(0, dtype=torch.long)).tolist()
        dmtet = DMTet(int(state["res"]), state["lo"].tolist(), state["hi"].tolist(), levels,
                      float(state.get("level_scale", 1.0)), float(state.get("fine_scale", 1.0)),
                      "dual" if bool(state.get("dual", False)) else "tets")
        dmtet.load_state_dict({k: v for k, v in state.items() if k not in meta})
        return dmtet

    def state(self) -> dict:
        return {**self.state_dict(), "res": torch.tensor(self.res),
                "level_res": torch.tensor([lattice.shape[0] - 1 for lattice in self.levels], dtype=torch.long),
                "level_scale": torch.tensor(self.level_scale, dtype=torch.float64),
                "fine_scale": torch.tensor(self.fine_scale, dtype=torch.float64),
                "dual": torch.tensor(self.surface == "dual")}


def _grid_density(density_fn: Callable[[torch.Tensor], torch.Tensor], bound: float, res: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Points [res^3,3] of a regular grid over the box and the density there [res^3]."""
    ax = torch.linspace(-bound, bound, res)
    pts = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1).reshape(-1, 3)
    with torch.no_grad():
        return pts, torch.cat([density_fn(p) for p in pts.split(1 << 16)]).cpu()


def choose_threshold(density_fn: Callable[[torch.Tensor], torch.Tensor], threshold: float, bound: float = 1.0,
                     res: int = 64) -> tuple[float, str | None]:
    """The density threshold of the phase I -> II hand-over, and why it changed: when no
    grid sample lies on one side of `threshold` (a short or faint phase I), the field's mean
    density over the box (threestudio's isosurface_threshold "auto"), if that one does
    cross."""
    _, density = _grid_density(density_fn, bound, res)
    above = float((density > threshold).float().mean())
    if 0 < above < 1:
        return threshold, None
    auto = float(density.mean())
    if not 0 < float((density > auto).float().mean()) < 1:
        return threshold, None  # a constant field: nothing to extract at any threshold
    return auto, (f"no density crosses phase2.density_threshold {threshold:g} ({above:.0%} of the box above it): "
                  f"using the field's mean density {auto:.3g} instead")


def occupied_box(density_fn: Callable[[torch.Tensor], torch.Tensor], threshold: float, bound: float = 1.0,
                 res: int = 64, margin: float = 0.1) -> tuple[list[float], list[float]]:
    """Cube around the region where density > threshold, grown by `margin` of its size and
    clipped to the field's box. Falls back to the whole box when nothing is occupied."""
    pts, density = _grid_density(density_fn, bound, res)
    occ = density > threshold
    if not occ.any():
        return [-bound] * 3, [bound] * 3
    p = pts[occ]
    lo, hi = p.min(0).values, p.max(0).values
    center, half = (lo + hi) / 2, ((hi - lo).max() / 2 + 2 * bound / res) * (1 + margin)
    lo = (center - half).clamp(-bound, bound)
    hi = (center + half).clamp(-bound, bound)
    return lo.tolist(), hi.tolist()


def fill_enclosed(sdf: torch.Tensor, res: int, closing: int = 1) -> torch.Tensor:
    """sdf on the (res+1)^3 grid vertices (negative inside) -> the same with every empty
    region that cannot reach the grid's border made solid. A NeRF needs only an opaque
    shell, so its interior is often empty; extracted as is, that would be a hidden inner
    surface no view can correct. The shell is first closed by `closing` voxels so pin-holes
    at grid resolution do not connect the interior to the outside; only empty vertices are
    ever changed."""
    from scipy import ndimage

    n = res + 1
    occupied = (sdf < 0).reshape(n, n, n).cpu().numpy()
    ball = ndimage.generate_binary_structure(3, 1)
    closed = ndimage.binary_dilation(occupied, ball, iterations=closing) if closing else occupied
    labels, _ = ndimage.label(~closed)
    border = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(),
                                       labels[:, :, [0, -1]].ravel()]))
    outside = np.isin(labels, border[border > 0])
    if closing:
        outside = ndimage.binary_dilation(outside, ball, iterations=closing)
    enclosed = ~occupied & ~outside
    out = sdf.clone()
    out[torch.from_numpy(enclosed.reshape(-1)).to(sdf.device)] = -1.0
    return out


# How far the hand-over closes a NeRF's shell before filling what it encloses: 1/48 of the
# grid's box whatever its resolution. The pin-holes are phase I's (its fog has the field's
# scale, not the tet grid's): one cell at 48 closed them, one cell at 96 left the insides of the
# oracle's blocks and mug open, hidden inner surfaces that tripled their Chamfer.
HANDOVER_CLOSING = 1 / 48


def dmtet_from_density(density_fn: Callable[[torch.Tensor], torch.Tensor], res: int, threshold: float,
                       bound: float = 1.0, sdf_grid: SdfGridConfig | None = None) -> DMTet:
    """Phase I -> II hand-over: grid fitted to the occupied box, sdf = clamp((τ - σ)/τ, ±1)
    (the SPEC's clamp(σ - τ, ±1), divided by τ so crossings keep sub-cell position, and
    negated to our negative-inside convention), enclosed empty space filled (HANDOVER_CLOSING)."""
    lo, hi = occupied_box(density_fn, threshold, bound)
    dmtet = DMTet.from_config(res, lo, hi, sdf_grid)
    closing = max(1, round(res * HANDOVER_CLOSING))
    dmtet.set_sdf(lambda v: fill_enclosed(torch.cat([((threshold - density_fn(p)) / threshold).clamp(-1, 1)
                                                     for p in v.split(1 << 16)]), res, closing))
    return dmtet


def dmtet_from_mesh(verts: torch.Tensor, faces: torch.Tensor, res: int, bound: float, margin: float,
                    sdf_grid: SdfGridConfig | None = None, sign_faces: int = 5000) -> DMTet:
    """Edit mode: a grid over the mesh's box grown by `margin` of its largest side on every
    side (room for the edit to grow), with the mesh's signed distance (geometry/mesh_sdf.py).
    The inside/outside sign uses the winding number of a copy decimated to `sign_faces` (its cost is points x faces); distances come from dense
    samples of the full mesh, so only the sign near the surface can lose detail."""
    from .mesh_sdf import mesh_sdf

    lo, hi = verts.min(0).values, verts.max(0).values
    pad = (hi - lo).max() * margin
    lo, hi = (lo - pad).clamp(min=-bound), (hi + pad).clamp(max=bound)
    sv, sf = verts, faces
    if faces.shape[0] > sign_faces:
        sv, sf, _ = cleanup(verts, faces, sign_faces)
    dmtet = DMTet.from_config(res, lo.tolist(), hi.tolist(), sdf_grid)
    dmtet.set_sdf(lambda p: mesh_sdf(p, verts, faces, sign_mesh=(sv, sf)))
    return dmtet

