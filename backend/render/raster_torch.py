"""Pure-PyTorch rasterizer with nvdiffrast's op shapes; runs on CPU and CUDA.

Visibility is a z-buffer without gradients (scatter-min over packed depth|triangle keys);
barycentrics of the winning triangle are then recomputed differentiably and made
perspective-correct, so gradients reach clip-space positions through `interpolate`;
`antialias` blends colours across silhouette edges with a coverage that depends
differentiably on the edge position, which is where geometry gets its silhouette gradient.

Conventions (see camera.py): pixel centres at integer + 0.5, row 0 at NDC y = +1.
rast[..., 0:2] = (u, v) with point = u*v0 + v*v1 + (1-u-v)*v2 (nvdiffrast's order),
rast[..., 2] = z/w, rast[..., 3] = triangle id + 1 (0 = background).

Two evaluations of the same maths: "sparse" gathers the covered pixels (and the silhouette
pairs) first, "dense" computes at every pixel and masks with torch.where. On CUDA a
gathered set of data-dependent size is a host sync (the device must say how many there
are), so CUDA (and the estimator's fake tensors, which stand for it) takes dense: one sync
per rasterize (the count of candidate pixel-triangle pairs) and none elsewhere. The CPU has
no sync to save and takes sparse, which does far less work at silhouettes. They agree to
float rounding (tests/test_raster.py).
"""
from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import is_fake

from ..geometry.mesh import uv_lookup
from .sizes import active

_MAX_PAIRS = 1 << 23  # candidate (pixel, triangle) pairs per chunk: bounds peak memory
_DEPTH_BITS = 31


def _screen(pos: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B,V,4] clip -> pixel x, pixel y (centres at integers), ndc z; each [B,V]."""
    w = pos[..., 3]
    x = (pos[..., 0] / w + 1) * 0.5 * width - 0.5
    y = (1 - pos[..., 1] / w) * 0.5 * height - 0.5
    return x, y, pos[..., 2] / w


def _edge_bary(px: torch.Tensor, py: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Screen-space barycentrics of points (px, py) [N] in triangles tx, ty [N,3] -> [N,3]."""
    x0, x1, x2 = tx.unbind(-1)
    y0, y1, y2 = ty.unbind(-1)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    area = torch.where(area.abs() < 1e-12, torch.full_like(area, 1e-12), area)
    b1 = ((px - x0) * (y2 - y0) - (x2 - x0) * (py - y0)) / area
    b2 = ((x1 - x0) * (py - y0) - (px - x0) * (y1 - y0)) / area
    return torch.stack([1 - b1 - b2, b1, b2], dim=-1)


def _batched(pos: torch.Tensor) -> torch.Tensor:
    return pos[None] if pos.dim() == 2 else pos


def _use_dense(t: torch.Tensor, dense: bool | None) -> bool:
    return (t.device.type == "cuda" or is_fake(t)) if dense is None else dense


# Where a dense evaluation has no triangle (a background pixel), the triangle it computes on:
# any well-conditioned one, so that masked-out values and their (zero) gradients stay finite.
_SAFE_TRIANGLE = ((-0.5, -0.5, 0.0, 1.0), (0.5, -0.5, 0.0, 1.0), (0.0, 0.5, 0.0, 1.0))


def _pixels(b: int, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(batch, y, x) indices of every pixel, each [B*H*W] in row-major order."""
    grid = torch.meshgrid(torch.arange(b, device=device), torch.arange(height, device=device),
                          torch.arange(width, device=device), indexing="ij")
    return tuple(t.reshape(-1) for t in grid)


@torch.no_grad()
def _visibility(pos: torch.Tensor, tri: torch.Tensor, height: int, width: int, dense: bool = False) -> torch.Tensor:
    """Nearest triangle per pixel: [B,H,W] long, -1 where empty. dense: inside a step the
    candidate pairs run at a capacity (render/sizes.py), the ones past the count masked."""
    b_count, n_verts = pos.shape[:2]
    x, y, z = _screen(pos.float(), height, width)
    w = pos[..., 3]
    tri = tri.long()
    flat = lambda t: t.reshape(-1)  # noqa: E731
    # Triangles of every batch item, indexed globally (b * F + f).
    tri_off = (tri[None] + (torch.arange(b_count, device=pos.device) * n_verts)[:, None, None]).reshape(-1, 3)
    tx, ty, tz, tw = (flat(t)[tri_off] for t in (x, y, z, w))
    ok = (tw > 1e-6).all(-1)
    xmin = tx.min(-1).values.ceil().clamp(0, width - 1)
    xmax = tx.max(-1).values.floor().clamp(-1, width - 1)
    ymin = ty.min(-1).values.ceil().clamp(0, height - 1)
    ymax = ty.max(-1).values.floor().clamp(-1, height - 1)
    bw = (xmax - xmin + 1).clamp(min=0).long()
    bh = (ymax - ymin + 1).clamp(min=0).long()
    count = torch.where(ok, bw * bh, torch.zeros_like(bw))
    n_faces = tri.shape[0]
    # One slot past the image takes the pairs that fall outside their triangle.
    zbuf = torch.full((b_count * height * width + 1,), torch.iinfo(torch.int64).max,
                      dtype=torch.int64, device=pos.device)
    cum = torch.cumsum(count, 0)
    sizes = active() if dense and cum.numel() else None
    if sizes is not None:
        size = sizes.room("raster", cum[-1], None)
    else:  # the one host sync: how many candidate pairs
        size = int(cum[-1]) if cum.numel() else 0
    start = cum - count  # each triangle's first pair
    for k0 in range(0, size, _MAX_PAIRS):
        k1 = min(k0 + _MAX_PAIRS, size)
        k = torch.arange(k0, k1, device=pos.device)
        if sizes is not None:  # the triangle of pair k (past the count: the last one, its pairs masked below)
            fid = torch.searchsorted(cum, k, right=True).clamp(max=cum.shape[0] - 1)
        else:  # every pair is real: each triangle repeated over its pairs in this chunk (linear, no search)
            f0, f1 = torch.searchsorted(cum, torch.tensor([k0, k1 - 1], device=pos.device), right=True).tolist()
            reps = cum[f0:f1 + 1].clamp(max=k1) - start[f0:f1 + 1].clamp(min=k0)
            fid = f0 + torch.repeat_interleave(torch.arange(f1 - f0 + 1, device=pos.device), reps, output_size=k1 - k0)
        local = k - start[fid]  # its index in that triangle's bounding box
        width_f = bw[fid].clamp(min=1)  # a pair past the count may land on an empty box
        px = xmin[fid] + (local % width_f)
        py = ymin[fid] + torch.div(local, width_f, rounding_mode="floor")
        bary = _edge_bary(px, py, tx[fid], ty[fid])
        depth = (bary * tz[fid]).sum(-1)
        inside = (bary >= 0).all(-1) & (depth >= -1) & (depth <= 1) & (k < cum[-1])
        batch = torch.div(fid, n_faces, rounding_mode="floor")
        pix = torch.where(inside, (batch * height + py.long()) * width + px.long(), zbuf.shape[0] - 1)
        dq = ((depth.clamp(-1, 1) + 1) * 0.5 * ((1 << _DEPTH_BITS) - 1)).long()
        zbuf.scatter_reduce_(0, pix, (dq << 32) | (fid % n_faces), reduce="amin")
    zbuf = zbuf[:-1]
    empty = zbuf == torch.iinfo(torch.int64).max
    tri_id = torch.where(empty, torch.full_like(zbuf, -1), zbuf & 0xFFFFFFFF)
    return tri_id.reshape(b_count, height, width)


def _corners(pos: torch.Tensor, tri: torch.Tensor, b_idx: torch.Tensor, face: torch.Tensor,
             valid: torch.Tensor | None = None) -> torch.Tensor:
    """Clip-space corners [N,3,4] of the given faces; where `valid` is False (a dense
    evaluation's background) the safe triangle instead (no gradient reaches pos there)."""
    verts = pos[b_idx[:, None], tri[face.clamp(min=0)].long()]
    if valid is None:
        return verts
    return torch.where(valid[:, None, None], verts, verts.new_tensor(_SAFE_TRIANGLE))


def _pixel_bary(corners: torch.Tensor, px: torch.Tensor, py: torch.Tensor, height: int, width: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable screen-space barycentrics [N,3] of pixel centres in faces given by their
    clip-space corners [N,3,4] (_corners), and the faces' clip w [N,3]."""
    x, y, _ = _screen(corners, height, width)
    return _edge_bary(px.to(x.dtype), py.to(x.dtype), x, y), corners[..., 3]


def rasterize(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int],
              dense: bool | None = None) -> torch.Tensor:
    """pos: [B,V,4] or [V,4] clip coordinates; tri: [F,3] int -> rast [B,H,W,4].
    dense: None to choose by device (the module's docstring)."""
    pos = _batched(pos)
    height, width = resolution
    dense = _use_dense(pos, dense)
    tri_id = _visibility(pos.detach(), tri, height, width, dense)
    if dense:
        b_idx, py, px = _pixels(pos.shape[0], height, width, pos.device)
        face = tri_id.reshape(-1)
        covered = face >= 0
        vals = _rast_values(pos, tri, b_idx, face, px, py, height, width, covered)
        return torch.where(covered[:, None], vals, 0.0).reshape(pos.shape[0], height, width, 4)
    rast = pos.new_zeros(pos.shape[0], height, width, 4)
    b_idx, py, px = torch.nonzero(tri_id >= 0, as_tuple=True)
    if b_idx.numel() == 0:
        return rast
    face = tri_id[b_idx, py, px]
    return rast.index_put((b_idx, py, px), _rast_values(pos, tri, b_idx, face, px, py, height, width))


def _rast_values(pos: torch.Tensor, tri: torch.Tensor, b_idx: torch.Tensor, face: torch.Tensor, px: torch.Tensor,
                 py: torch.Tensor, height: int, width: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """rast's four channels [N,4] at the given pixels of the given faces."""
    corners = _corners(pos, tri, b_idx, face, valid)
    bary, w = _pixel_bary(corners, px, py, height, width)
    persp = bary / w
    persp = persp / persp.sum(-1, keepdim=True)
    zw = (bary * (corners[..., 2] / w)).sum(-1)
    return torch.stack([persp[:, 0], persp[:, 1], zw, (face + 1).to(pos.dtype)], dim=-1)


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor, dense: bool | None = None) -> torch.Tensor:
    """attr: [B,V,C] or [V,C] per-vertex attributes -> [B,H,W,C], zero on background."""
    b_count, height, width = rast.shape[:3]
    tri_id = rast[..., 3].long() - 1
    if _use_dense(rast, dense):
        face = tri_id.reshape(-1, 1)
        vid = tri[face[:, 0].clamp(min=0)].long()  # [N,3]
        a = attr[vid] if attr.dim() == 2 else attr[_pixels(b_count, height, width, rast.device)[0][:, None], vid]
        uv = rast.reshape(-1, 4)[:, :2]
        w = torch.stack([uv[:, 0], uv[:, 1], 1 - uv[:, 0] - uv[:, 1]], dim=-1)
        out = torch.where(face >= 0, (w[..., None] * a).sum(1), 0.0)
        return out.reshape(b_count, height, width, attr.shape[-1])
    b_idx, py, px = torch.nonzero(tri_id >= 0, as_tuple=True)
    out = attr.new_zeros(b_count, height, width, attr.shape[-1])
    if b_idx.numel() == 0:
        return out
    vid = tri[tri_id[b_idx, py, px]].long()  # [N,3]
    a = attr[vid] if attr.dim() == 2 else attr[b_idx[:, None], vid]  # [N,3,C]
    u, v = rast[b_idx, py, px, 0], rast[b_idx, py, px, 1]
    w = torch.stack([u, v, 1 - u - v], dim=-1)
    return out.index_put((b_idx, py, px), (w[..., None] * a).sum(1))


def texture(tex: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup (nvdiffrast's texture op, linear filter, clamp): geometry's uv_lookup."""
    return uv_lookup(tex, uv)


def _neighbour_pairs(tri_id: torch.Tensor, dense: bool) -> tuple[int, ...]:
    """4-neighbour pixel pairs [N] where the triangle changes (dense: every pair, those
    masked out by `cand`): -> (the count of horizontal pairs, which come first, b, y, x of
    each pair's first pixel, cand, dy (0: horizontal, 1: vertical)). One batch for both
    directions: half the launches of one pass each."""
    _, height, width = tri_id.shape
    found = []
    for dy, dx in ((0, 1), (1, 0)):
        a_id, b_id = tri_id[:, : height - dy, : width - dx], tri_id[:, dy:, dx:]
        cand = (a_id != b_id) & ((a_id >= 0) | (b_id >= 0))
        if dense:  # every neighbour pair, the others masked (no data-dependent size)
            bi, yi, xi = _pixels(cand.shape[0], cand.shape[1], cand.shape[2], tri_id.device)
            cand = cand.reshape(-1)
        else:
            bi, yi, xi = torch.nonzero(cand, as_tuple=True)
            cand = torch.ones_like(bi, dtype=torch.bool)
        found.append((bi, yi, xi, cand, torch.full_like(bi, dy)))
    return (found[0][0].shape[0], *(torch.cat(parts) for parts in zip(*found)))


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              depth_tolerance: float = 0.01, dense: bool | None = None) -> torch.Tensor:
    """Silhouette antialiasing. color: [B,H,W,C]; returns [B,H,W,C].

    For each pair of 4-neighbour pixels where the front surface (the occluder) ends, the
    occluder triangle's edge crosses the segment between the two centres at a fraction alpha
    (from the occluder's centre); the pixel on the far side of the edge takes the other
    side's colour in proportion to the covered half-pixel. alpha depends on the vertex
    positions, so gradients flow to geometry.
    """
    pos = _batched(pos)
    _, height, width, _ = color.shape
    tri_id = rast[..., 3].long() - 1
    zw = rast[..., 2]
    flat = color.reshape(-1, color.shape[-1])
    dense = _use_dense(color, dense)
    n_h, bi, yi, xi, cand, dy = _neighbour_pairs(tri_id, dense)
    if bi.numel() == 0:
        return color
    dx = 1 - dy
    ta, tb = tri_id[bi, yi, xi], tri_id[bi, yi + dy, xi + dx]
    za, zb = zw[bi, yi, xi], zw[bi, yi + dy, xi + dx]
    # Occluder: the only covered pixel, or the nearer one.
    first_occ = (tb < 0) | ((ta >= 0) & (za <= zb))
    occ_face = torch.where(first_occ, ta, tb)
    oy = torch.where(first_occ, yi, yi + dy)
    ox = torch.where(first_occ, xi, xi + dx)
    qy = torch.where(first_occ, yi + dy, yi)
    qx = torch.where(first_occ, xi + dx, xi)
    mask = cand if dense else None
    occ_corners = _corners(pos, tri, bi, occ_face, mask)  # both pixels against the occluder's edge
    bary_o, w = _pixel_bary(occ_corners, ox, oy, height, width)
    bary_q, _ = _pixel_bary(occ_corners, qx, qy, height, width)
    k = bary_q.detach().argmin(-1, keepdim=True)
    bo, bq = bary_o.gather(-1, k)[:, 0], bary_q.gather(-1, k)[:, 0]
    # Keep true silhouettes: the far pixel is background, or lies well behind the
    # occluder's plane (clip w is view depth; 1/w is affine in screen space).
    q_face = tri_id[bi, qy, qx]
    w_plane = 1 / (bary_q.detach() / w.detach()).sum(-1)
    has_q = q_face >= 0
    q_inv_w = torch.zeros_like(w_plane)
    if dense:
        bq_own, w_own = _pixel_bary(_corners(pos.detach(), tri, bi, q_face, has_q & cand), qx, qy, height, width)
        q_inv_w = torch.where(has_q, (bq_own / w_own).sum(-1), q_inv_w)
    elif has_q.any():
        bq_own, w_own = _pixel_bary(_corners(pos.detach(), tri, bi[has_q], q_face[has_q]), qx[has_q], qy[has_q],
                                    height, width)
        q_inv_w[has_q] = (bq_own / w_own).sum(-1)
    q_w = torch.where(has_q, 1 / q_inv_w.clamp(min=1e-12), torch.full_like(w_plane, float("inf")))
    keep = (bq < 0) & (bo.detach() >= 0) & (q_w > w_plane * (1 + depth_tolerance)) & cand
    # alpha in [0, 1], pixel units from the occluder's centre (1 where a pair is masked)
    alpha = bo / torch.where(keep, bo - bq, 1.0)
    o_pix = (bi * height + oy) * width + ox
    q_pix = (bi * height + qy) * width + qx
    c_o, c_q = flat[o_pix], flat[q_pix]
    near = alpha < 0.5  # edge inside the occluder's pixel: it shows some background
    to_o = torch.where((keep & near)[:, None], (0.5 - alpha).clamp(min=0)[:, None] * (c_q - c_o), 0.0)
    to_q = torch.where((keep & ~near)[:, None], (alpha - 0.5).clamp(min=0)[:, None] * (c_o - c_q), 0.0)
    if not dense:  # only the pairs that move colour (the CPU's sparse form)
        moves_o, moves_q = keep & near, keep & ~near
        h = torch.arange(bi.shape[0], device=bi.device) < n_h
        idx = torch.cat([o_pix[moves_o & h], q_pix[moves_q & h], o_pix[moves_o & ~h], q_pix[moves_q & ~h]])
        val = torch.cat([to_o[moves_o & h], to_q[moves_q & h], to_o[moves_o & ~h], to_q[moves_q & ~h]])
        return flat.index_add(0, idx, val).reshape(color.shape)
    # Added in the order of one pass a direction: a pixel's sum rounds the same either way.
    idx = torch.cat([o_pix[:n_h], q_pix[:n_h], o_pix[n_h:], q_pix[n_h:]])
    val = torch.cat([to_o[:n_h], to_q[:n_h], to_o[n_h:], to_q[n_h:]])
    return flat.index_add(0, idx, val).reshape(color.shape)
