"""Pure-PyTorch rasterizer with nvdiffrast's op shapes; runs on CPU and CUDA.

Visibility is a z-buffer without gradients (scatter-min over packed depth|triangle keys);
barycentrics of the winning triangle are then recomputed differentiably and made
perspective-correct, so gradients reach clip-space positions through `interpolate`;
`antialias` blends colours across silhouette edges with a coverage that depends
differentiably on the edge position, which is where geometry gets its silhouette gradient.

Conventions (see camera.py): pixel centres at integer + 0.5, row 0 at NDC y = +1.
rast[..., 0:2] = (u, v) with point = u*v0 + v*v1 + (1-u-v)*v2 (nvdiffrast's order),
rast[..., 2] = z/w, rast[..., 3] = triangle id + 1 (0 = background).
"""
from __future__ import annotations

import torch

from ..geometry.mesh import uv_lookup

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


@torch.no_grad()
def _visibility(pos: torch.Tensor, tri: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest triangle per pixel: [B,H,W] long, -1 where empty."""
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
    zbuf = torch.full((b_count * height * width,), torch.iinfo(torch.int64).max,
                      dtype=torch.int64, device=pos.device)
    cum = torch.cumsum(count, 0)
    start = 0
    while start < count.shape[0]:
        base = int(cum[start - 1]) if start > 0 else 0
        end = int(torch.searchsorted(cum, base + _MAX_PAIRS, right=True))
        end = max(end, start + 1)
        cnt = count[start:end]
        total = int(cnt.sum())
        if total:
            fid = torch.repeat_interleave(torch.arange(start, end, device=pos.device), cnt)
            first = torch.cumsum(cnt, 0) - cnt
            local = torch.arange(total, device=pos.device) - torch.repeat_interleave(first, cnt)
            px = xmin[fid] + (local % bw[fid])
            py = ymin[fid] + torch.div(local, bw[fid], rounding_mode="floor")
            bary = _edge_bary(px, py, tx[fid], ty[fid])
            depth = (bary * tz[fid]).sum(-1)
            inside = (bary >= 0).all(-1) & (depth >= -1) & (depth <= 1)
            fid, px, py, depth = fid[inside], px[inside], py[inside], depth[inside]
            batch = torch.div(fid, n_faces, rounding_mode="floor")
            pix = (batch * height + py.long()) * width + px.long()
            dq = ((depth + 1) * 0.5 * ((1 << _DEPTH_BITS) - 1)).long()
            zbuf.scatter_reduce_(0, pix, (dq << 32) | (fid % n_faces), reduce="amin")
        start = end
    empty = zbuf == torch.iinfo(torch.int64).max
    tri_id = torch.where(empty, torch.full_like(zbuf, -1), zbuf & 0xFFFFFFFF)
    return tri_id.reshape(b_count, height, width)


def _pixel_bary(pos: torch.Tensor, tri: torch.Tensor, b_idx: torch.Tensor, face: torch.Tensor,
                px: torch.Tensor, py: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable screen-space barycentrics [N,3] of pixel centres in given faces, and the
    faces' clip w [N,3]."""
    verts = pos[b_idx[:, None], tri[face].long()]  # [N,3,4]
    x, y, _ = _screen(verts, height, width)
    return _edge_bary(px.to(x.dtype), py.to(x.dtype), x, y), verts[..., 3]


def rasterize(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """pos: [B,V,4] or [V,4] clip coordinates; tri: [F,3] int -> rast [B,H,W,4]."""
    pos = _batched(pos)
    height, width = resolution
    tri_id = _visibility(pos.detach(), tri, height, width)
    rast = pos.new_zeros(pos.shape[0], height, width, 4)
    b_idx, py, px = torch.nonzero(tri_id >= 0, as_tuple=True)
    if b_idx.numel() == 0:
        return rast
    face = tri_id[b_idx, py, px]
    bary, w = _pixel_bary(pos, tri, b_idx, face, px, py, height, width)
    persp = bary / w
    persp = persp / persp.sum(-1, keepdim=True)
    zw = (bary * (pos[b_idx[:, None], tri[face].long()][..., 2] / w)).sum(-1)
    vals = torch.stack([persp[:, 0], persp[:, 1], zw, (face + 1).to(pos.dtype)], dim=-1)
    return rast.index_put((b_idx, py, px), vals)


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """attr: [B,V,C] or [V,C] per-vertex attributes -> [B,H,W,C], zero on background."""
    b_count, height, width = rast.shape[:3]
    tri_id = rast[..., 3].long() - 1
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


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              depth_tolerance: float = 0.01) -> torch.Tensor:
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
    deltas = []
    for dy, dx in ((0, 1), (1, 0)):
        a_id, b_id = tri_id[:, : height - dy, : width - dx], tri_id[:, dy:, dx:]
        cand = (a_id != b_id) & ((a_id >= 0) | (b_id >= 0))
        bi, yi, xi = torch.nonzero(cand, as_tuple=True)
        if bi.numel() == 0:
            continue
        ta, tb = a_id[bi, yi, xi], b_id[bi, yi, xi]
        za, zb = zw[bi, yi, xi], zw[bi, yi + dy, xi + dx]
        # Occluder: the only covered pixel, or the nearer one.
        first_occ = (tb < 0) | ((ta >= 0) & (za <= zb))
        occ_face = torch.where(first_occ, ta, tb)
        oy = torch.where(first_occ, yi, yi + dy)
        ox = torch.where(first_occ, xi, xi + dx)
        qy = torch.where(first_occ, yi + dy, yi)
        qx = torch.where(first_occ, xi + dx, xi)
        bary_o, w = _pixel_bary(pos, tri, bi, occ_face, ox, oy, height, width)
        bary_q, _ = _pixel_bary(pos, tri, bi, occ_face, qx, qy, height, width)
        k = bary_q.detach().argmin(-1, keepdim=True)
        bo, bq = bary_o.gather(-1, k)[:, 0], bary_q.gather(-1, k)[:, 0]
        # Keep true silhouettes: the far pixel is background, or lies well behind the
        # occluder's plane (clip w is view depth; 1/w is affine in screen space).
        q_face = tri_id[bi, qy, qx]
        w_plane = 1 / (bary_q.detach() / w.detach()).sum(-1)
        q_inv_w = torch.zeros_like(w_plane)
        has_q = q_face >= 0
        if has_q.any():
            bq_own, w_own = _pixel_bary(pos.detach(), tri, bi[has_q], q_face[has_q], qx[has_q], qy[has_q], height, width)
            q_inv_w[has_q] = (bq_own / w_own).sum(-1)
        q_w = torch.where(has_q, 1 / q_inv_w.clamp(min=1e-12), torch.full_like(w_plane, float("inf")))
        keep = (bq < 0) & (bo.detach() >= 0) & (q_w > w_plane * (1 + depth_tolerance))
        if not keep.any():
            continue
        bo, bq = bo[keep], bq[keep]
        alpha = bo / (bo - bq)  # in [0, 1], pixel units from the occluder's centre
        o_pix = (bi[keep] * height + oy[keep]) * width + ox[keep]
        q_pix = (bi[keep] * height + qy[keep]) * width + qx[keep]
        c_o, c_q = flat[o_pix], flat[q_pix]
        near = alpha < 0.5  # edge inside the occluder's pixel: it shows some background
        frac_o = (0.5 - alpha).clamp(min=0)[:, None]
        frac_q = (alpha - 0.5).clamp(min=0)[:, None]
        deltas.append((o_pix[near], (frac_o * (c_q - c_o))[near]))
        deltas.append((q_pix[~near], (frac_q * (c_o - c_q))[~near]))
    if not deltas:
        return color
    idx = torch.cat([d[0] for d in deltas])
    val = torch.cat([d[1] for d in deltas])
    return flat.index_add(0, idx, val).reshape(color.shape)
