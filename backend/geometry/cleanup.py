"""Mesh cleanup: merge duplicate vertices and faces, drop null faces and unreferenced
vertices, make the surface 2-manifold (geometry/manifold.py) before and after decimating it to
a face budget. Which pieces belong to the object is geometry/pieces.py's question.

Decimation is VTK's quadric edge collapse (vtkQuadricDecimation, volume preserved): chosen over
pymeshlab (no wheel for glibc < 2.35), fast-simplification / pyfqmr (they stop above the budget
on the mug and the ring on a stick) and libigl's qslim (hundreds of folded edges) by measuring
each on the oracle targets' marching-tets surfaces at the presets' budgets (docs/quality.md,
"Decimation").
"""
from __future__ import annotations

import numpy as np
import torch

from .manifold import make_manifold


def _weld(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices at the same position merged, faces that repeat a vertex or another face's
    vertex set or have no area dropped, unreferenced vertices dropped.
    -> (verts, faces, index of each kept vertex in v)."""
    _, first, inverse = np.unique(v, axis=0, return_index=True, return_inverse=True)
    f = inverse.reshape(-1)[f]
    tri = v[first][f]
    area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    f = f[area2 > 0]  # a face with a repeated vertex has none
    f = f[np.sort(np.unique(np.sort(f, axis=1), axis=0, return_index=True)[1])]
    return _compact(v[first], f, first)


def _compact(v: np.ndarray, f: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    used, f = np.unique(f, return_inverse=True)
    return v[used], f.reshape(-1, 3), source[used]


def decimate(v: np.ndarray, f: np.ndarray, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """verts [V,3], faces [F,3] -> at most max_faces faces (vtkQuadricDecimation)."""
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray, vtk_to_numpy
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
    from vtkmodules.vtkFiltersCore import vtkQuadricDecimation

    points = vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(v, dtype=np.float64), deep=True))
    cells = vtkCellArray()
    cells.SetData(numpy_to_vtkIdTypeArray(np.arange(0, 3 * len(f) + 1, 3, dtype=np.int64), deep=True),
                  numpy_to_vtkIdTypeArray(np.ascontiguousarray(f, dtype=np.int64).reshape(-1), deep=True))
    mesh = vtkPolyData()
    mesh.SetPoints(points)
    mesh.SetPolys(cells)
    collapse = vtkQuadricDecimation()
    collapse.SetInputData(mesh)
    collapse.SetVolumePreservation(True)
    collapse.SetTargetReduction(1.0 - max_faces / len(f))  # it removes at least this share of the faces
    collapse.Update()
    out = collapse.GetOutput()
    verts = vtk_to_numpy(out.GetPoints().GetData()).astype(np.float64)
    faces = vtk_to_numpy(out.GetPolys().GetConnectivityArray()).reshape(-1, 3).astype(np.int64)
    used, faces = np.unique(faces, return_inverse=True)
    return verts[used], faces.reshape(-1, 3)


def cleanup(verts: torch.Tensor, faces: torch.Tensor, max_faces: int, colors: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """-> cleaned verts [V,3], faces [F,3], vertex colours [V,3] when given (CPU); a decimated
    vertex takes the colour of the input vertex nearest to it. A closed surface comes out
    closed and 2-manifold, before and after quadric collapse: its input must be manifold to
    stay so, and it can leave a fin even then (geometry/manifold.py)."""
    v0 = verts.detach().cpu().double().numpy()
    v, f, source = _weld(v0, faces.cpu().numpy().astype(np.int64))
    v, f, copied = make_manifold(v, f)
    source = source[copied]
    if len(f) > max_faces:
        v, f = decimate(v, f, max_faces)
        v, f, _ = make_manifold(v, f)
        from scipy.spatial import cKDTree

        source = source[cKDTree(v0[source]).query(v)[1]]
    out_colors = None if colors is None else colors.detach().cpu().float()[torch.from_numpy(source)]
    return torch.tensor(v, dtype=torch.float32), torch.from_numpy(f).long(), out_colors
