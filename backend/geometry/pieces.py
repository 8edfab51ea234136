"""The pieces of a triangle mesh and which of them belong to the object.

A piece is a connected component with vertices welded by position (UV seams split a
vertex into copies at one position; a viewer sees one surface there). Loose pieces are
told apart from the object by what they are, never by their extent (a thin sheet spans a
large box, and a floater far out enlarges any box it is measured against):
- small: under a share of the largest piece's area, or of its face count;
- enclosed: every sampled vertex inside the rest of the surface (generalised winding number
  above one half), a closed shell no view can see, whatever its size.
The `keep` largest pieces are parts of the object whatever they are (stylize and edit keep
as many parts as the user's mesh has).

numpy / scipy on the mesh's arrays (no mesh library): the export runs it on the dense
surface before decimation and unwrapping, and again once decimation has reached the face
budget (pipeline/runner.py); the oracle report on the exported file (eval/oracle_report.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..schema import setting
from .cleanup import cleanup
from .mesh_sdf import winding_number


@dataclass(frozen=True, kw_only=True)
class PieceConfig:
    """What a generate result keeps (a preset's export.pieces): pieces of at least min_area of
    the largest piece's area and min_faces of its face count, not enclosed by the rest."""

    min_area: float = setting(lo=0.0, hi=1.0)
    min_faces: float = setting(lo=0.0, hi=1.0)


@dataclass(frozen=True)
class Pieces:
    """label [F] the piece of each face, pieces ordered by area (0 the largest); area [P]
    (the mesh's units squared), faces [P] face counts; welded [F,3] the faces on position-
    welded vertices (indices into the original vertex array)."""

    label: np.ndarray
    area: np.ndarray
    faces: np.ndarray
    welded: np.ndarray

    def __len__(self) -> int:
        return len(self.area)

    def share(self) -> np.ndarray:
        """[P] each piece's share of the whole surface's area."""
        return self.area / max(float(self.area.sum()), 1e-30)


def welded_faces(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """faces [F,3] re-indexed to the first vertex at each position (exact duplicates)."""
    _, first, inverse = np.unique(verts, axis=0, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)][faces]


def face_areas(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = verts[faces].astype(np.float64)
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)


def find_pieces(verts: np.ndarray, faces: np.ndarray) -> Pieces:
    """verts [V,3], faces [F,3] (numpy) -> the mesh's pieces, largest first."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    welded = welded_faces(verts, faces)
    n = verts.shape[0]
    rows, cols = welded.reshape(-1), welded[:, [1, 2, 0]].reshape(-1)
    graph = coo_matrix((np.ones(rows.shape[0], np.int8), (rows, cols)), shape=(n, n))
    _, vertex_label = connected_components(graph, directed=False)
    used, label = np.unique(vertex_label[welded[:, 0]], return_inverse=True)
    area = np.bincount(label, weights=face_areas(verts, faces), minlength=len(used))
    count = np.bincount(label, minlength=len(used))
    order = np.lexsort((-count, -area))  # by area, then face count: a stable, total order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return Pieces(rank[label], area[order], count[order], welded)


def _enclosed(verts: np.ndarray, pieces: Pieces, candidates: list[int], samples: int) -> list[int]:
    """Those candidate pieces whose sampled vertices (up to `samples`, spread over the piece)
    all lie inside the rest of the surface."""
    out = []
    v = torch.from_numpy(verts.astype(np.float64))
    for p in candidates:
        own = pieces.label == p
        ids = np.unique(pieces.welded[own])
        pick = ids[np.linspace(0, len(ids) - 1, min(samples, len(ids))).round().astype(np.int64)]
        rest = torch.from_numpy(pieces.welded[~own])
        if rest.shape[0] == 0:
            continue
        w = winding_number(v[torch.from_numpy(pick)], v, rest)
        if bool((w.abs() > 0.5).all()):
            out.append(p)
    return out


@dataclass(frozen=True)
class Removal:
    """What keep_object removed: each small and each enclosed piece's area as a share of the
    largest piece's (largest first), and all of them as a share of the surface's area."""

    small: list[float]
    enclosed: list[float]
    share: float

    def __str__(self) -> str:
        pct = lambda shares: ", ".join(f"{a:.3%}" for a in shares[:8]) + (", ..." if len(shares) > 8 else "")  # noqa: E731
        return (f"removed {len(self.small)} small loose pieces ({pct(self.small)} of the largest piece's area) and "
                f"{len(self.enclosed)} enclosed ({pct(self.enclosed)}): {self.share:.3%} of the surface's area")


def keep_object(verts: torch.Tensor, faces: torch.Tensor, cfg: PieceConfig, keep: int = 1,
                samples: int = 16) -> tuple[torch.Tensor, torch.Tensor, Removal]:
    """verts [V,3], faces [F,3] -> the same vertex array with only the object's faces [F',3]
    (unreferenced vertices stay: the export's cleanup drops them), and what went. keep: the
    number of largest pieces kept whatever they are (>= 1)."""
    v, f = verts.detach().cpu().numpy(), faces.cpu().numpy()
    if f.shape[0] == 0:
        return verts, faces, Removal([], [], 0.0)
    pieces = find_pieces(v, f)
    keep = max(1, keep)
    small = ((pieces.area < cfg.min_area * pieces.area[0]) | (pieces.faces < cfg.min_faces * pieces.faces[0]))
    small[:keep] = False
    enclosed = _enclosed(v, pieces, [p for p in range(keep, len(pieces)) if not small[p]], samples)
    gone = small.copy()
    gone[enclosed] = True
    relative = pieces.area / pieces.area[0]
    removal = Removal(relative[small].tolist(), relative[enclosed].tolist(), float(pieces.share()[gone].sum()))
    kept = torch.from_numpy(~gone[pieces.label]).to(faces.device)
    return verts, faces[kept], removal


def decimated_object(verts: torch.Tensor, faces: torch.Tensor, cfg: PieceConfig, max_faces: int, keep: int = 1
                     ) -> tuple[torch.Tensor, torch.Tensor, Removal]:
    """The object (keep_object's, already) cleaned and decimated to max_faces
    (geometry/cleanup.py), then keep_object once more: quadric collapse can cut a thin bridge
    at a coarse budget, and what it cuts off is a loose piece like any other. -> verts [V,3],
    faces [F',3] (unreferenced vertices stay, as keep_object's), what went after decimation."""
    v, f, _ = cleanup(verts, faces, max_faces)
    return keep_object(v, f, cfg, keep)


def count_parts(verts: torch.Tensor, faces: torch.Tensor) -> int:
    """The number of pieces of a mesh (a stylize or edit source's parts)."""
    return len(find_pieces(verts.detach().cpu().numpy(), faces.cpu().numpy())) if faces.shape[0] else 0
