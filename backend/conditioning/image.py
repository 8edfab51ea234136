"""Reference and style images: load, foreground mask, recentre.

The mask comes from the alpha channel when the image has a meaningful one, else from a
segmenter model when one is given, else from a deterministic border flood fill: pixels
connected to the border whose colour is close to the border's dominant colour are
background. The object is then cropped to its mask, scaled so its longer side covers
`fill` of the frame, and centred on a square canvas (Zero-1-to-3's expected framing).
Images are [H,W,C] float in [0,1].
"""
from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

Segmenter = Callable[[torch.Tensor], torch.Tensor]  # [H,W,3] -> [H,W] foreground probability


class ImageInputError(ValueError):
    pass


def load_image(path: str | Path) -> torch.Tensor:
    """-> [H,W,4] RGBA in [0,1] (alpha 1 where the file has none)."""
    try:
        with Image.open(path) as im:
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageInputError(f"could not read {Path(path).name} as an image ({exc}); use PNG or JPEG") from exc
    if rgba.shape[0] < 8 or rgba.shape[1] < 8:
        raise ImageInputError(f"{Path(path).name} is {rgba.shape[1]}x{rgba.shape[0]} pixels: too small")
    return torch.from_numpy(rgba)


def border_flood_mask(rgb: torch.Tensor, tolerance: float = 0.12) -> torch.Tensor:
    """[H,W,3] -> [H,W] bool foreground: everything not reachable from the border through
    pixels within `tolerance` (max channel difference) of the border's median colour."""
    img = rgb.numpy()
    h, w, _ = img.shape
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg_color = np.median(border, axis=0)
    similar = np.abs(img - bg_color).max(-1) <= tolerance
    background = np.zeros((h, w), dtype=bool)
    queue = deque((y, x) for y in range(h) for x in (0, w - 1) if similar[y, x])
    queue.extend((y, x) for x in range(w) for y in (0, h - 1) if similar[y, x])
    while queue:
        y, x = queue.popleft()
        if background[y, x]:
            continue
        background[y, x] = True
        for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= ny < h and 0 <= nx < w and similar[ny, nx] and not background[ny, nx]:
                queue.append((ny, nx))
    return torch.from_numpy(~background)


def foreground_mask(rgba: torch.Tensor, segmenter: Segmenter | None = None) -> torch.Tensor:
    """[H,W,4] -> [H,W] float mask in [0,1]."""
    alpha = rgba[..., 3]
    if (alpha < 0.99).float().mean() > 0.01:
        return alpha
    if segmenter is not None:
        return segmenter(rgba[..., :3]).clamp(0, 1)
    return border_flood_mask(rgba[..., :3]).float()


def recentre(rgba: torch.Tensor, mask: torch.Tensor, size: int = 256, fill: float = 0.8) -> torch.Tensor:
    """Crop to the mask's box, scale its longer side to fill*size, centre on a size x size
    canvas. -> [size,size,4] with alpha = mask."""
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    if ys.numel() == 0:
        raise ImageInputError("no foreground found in the image: give an image with the object on a plain "
                              "background or with transparency")
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    crop = torch.cat([rgba[y0:y1, x0:x1, :3], mask[y0:y1, x0:x1, None]], -1)
    scale = fill * size / max(y1 - y0, x1 - x0)
    nh, nw = max(1, round((y1 - y0) * scale)), max(1, round((x1 - x0) * scale))
    resized = torch.nn.functional.interpolate(crop.permute(2, 0, 1)[None], (nh, nw), mode="bilinear",
                                              align_corners=False, antialias=True)[0].permute(1, 2, 0)
    out = torch.zeros(size, size, 4)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = resized.clamp(0, 1)
    return out


def prepare_reference(path: str | Path, size: int = 256, segmenter: Segmenter | None = None) -> torch.Tensor:
    """Load, mask and recentre a reference image -> [size,size,4]."""
    rgba = load_image(path)
    return recentre(rgba, foreground_mask(rgba, segmenter), size)
