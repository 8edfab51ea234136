"""What phase II optimises: a triangle surface with parameters. One phase (pipeline/
phases.GeometryPhase) runs the loop, losses and checkpoints for any of them.

- DMTetSurface: the deformable tetrahedral grid's zero level set (generate, edit);
- OffsetSurface: the user's mesh moved by per-vertex offsets, tied to where it started
  (stylize: topology and UVs stay the user's).

mesh() -> verts [V,3], faces [F,3] long, in the unit frame; state() is what a checkpoint
keeps and restored(state) the surface it describes. `kind` names what a regulariser of the
surface itself may read ("dmtet": its grid's values and edges; "offsets": its offsets).
`normals` is how phase II shades it (render/mesh_renderer.render_mesh): "face" for the DMTet,
"vertex" for the user's mesh (render_mesh's docstring says why).
"""
from __future__ import annotations

from typing import Any, Literal, Protocol

import torch

from ..errors import PipelineError
from .dmtet import DMTet


class Surface(Protocol):
    key: str  # its name among the phase's modules (and in checkpoints)
    kind: str
    normals: Literal["vertex", "face"]  # render_mesh

    def module(self) -> torch.nn.Module: ...
    def to(self, device: torch.device) -> "Surface": ...
    def prepare(self, edges: bool) -> None: ...
    def mesh(self) -> tuple[torch.Tensor, torch.Tensor]: ...
    def state(self) -> Any: ...
    def restored(self, state: Any) -> "Surface": ...


class DMTetSurface:
    key = kind = "dmtet"
    normals: Literal["vertex", "face"] = "face"

    def __init__(self, dmtet: DMTet) -> None:
        self.dmtet = dmtet

    def module(self) -> torch.nn.Module:
        return self.dmtet

    def to(self, device: torch.device) -> "DMTetSurface":
        self.dmtet = self.dmtet.to(device)
        return self

    def prepare(self, edges: bool) -> None:
        """edges: a regulariser reads the grid's edges. They are built here rather than inside a
        step: marching tets' over the whole grid (DMTet.whole_grid) and the sign entropy's."""
        if (self.dmtet.surface == "tets" and self.dmtet.uses_whole_grid()) or edges:
            self.dmtet.edges()

    def mesh(self) -> tuple[torch.Tensor, torch.Tensor]:
        verts, faces = self.dmtet()
        if faces.shape[0] == 0:
            raise PipelineError("the surface vanished: the DMTet has no zero crossing",
                                "lower phase2.density_threshold or give phase I more iterations")
        return verts, faces

    def state(self) -> Any:
        return self.dmtet.state()  # the grid with its values: a checkpoint rebuilds it whole

    def restored(self, state: Any) -> "DMTetSurface":
        return DMTetSurface(DMTet.from_state(state))


class OffsetSurface:
    """The input surface moved by per-vertex offsets (the "tie" regulariser keeps them
    near where they started)."""

    key, kind = "surface", "offsets"
    normals: Literal["vertex", "face"] = "vertex"

    def __init__(self, verts: torch.Tensor, faces: torch.Tensor) -> None:
        self.base, self.faces = verts.detach(), faces
        self.params = torch.nn.ParameterDict({"offset": torch.nn.Parameter(torch.zeros_like(self.base))})

    def module(self) -> torch.nn.Module:
        return self.params

    def to(self, device: torch.device) -> "OffsetSurface":
        self.base, self.faces, self.params = self.base.to(device), self.faces.to(device), self.params.to(device)
        return self

    def prepare(self, edges: bool) -> None:
        pass

    def mesh(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base + self.params["offset"], self.faces

    def state(self) -> Any:
        return self.params.state_dict()

    def restored(self, state: Any) -> "OffsetSurface":
        self.params.load_state_dict(state)
        return self
