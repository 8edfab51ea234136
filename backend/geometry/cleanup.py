"""Mesh cleanup (pymeshlab): merge duplicate vertices and faces, drop null faces and
unreferenced vertices, decimate to a face budget (quadric edge collapse, topology and
normals preserved). Which pieces belong to the object is geometry/pieces.py's question."""
from __future__ import annotations

import numpy as np
import torch


def cleanup(verts: torch.Tensor, faces: torch.Tensor, max_faces: int, colors: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """-> cleaned verts [V,3], faces [F,3], vertex colours [V,3] when given (CPU)."""
    import pymeshlab

    ms = pymeshlab.MeshSet()
    v, f = verts.detach().cpu().double().numpy(), faces.cpu().numpy().astype(np.int32)
    if colors is None:
        ms.add_mesh(pymeshlab.Mesh(v, f))
    else:
        rgba = np.concatenate([colors.detach().cpu().double().numpy(), np.ones((len(v), 1))], 1)
        ms.add_mesh(pymeshlab.Mesh(v, f, v_color_matrix=rgba))
    ms.meshing_remove_duplicate_vertices()
    ms.meshing_remove_duplicate_faces()
    ms.meshing_remove_null_faces()
    ms.meshing_remove_unreferenced_vertices()
    if ms.current_mesh().face_number() > max_faces:
        ms.meshing_decimation_quadric_edge_collapse(targetfacenum=max_faces, preservenormal=True,
                                                    preservetopology=True, optimalplacement=True)
    m = ms.current_mesh()
    out_colors = None if colors is None else torch.tensor(m.vertex_color_matrix()[:, :3], dtype=torch.float32)
    return (torch.tensor(m.vertex_matrix(), dtype=torch.float32),
            torch.tensor(m.face_matrix(), dtype=torch.long), out_colors)
