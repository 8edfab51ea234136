"""Image inputs prepared as each pretrained network's own image processor prepares them.

A role's processor is the transformers class its published preprocessor_config.json names
(`image_processor_type`, or the older `feature_extractor_type`), read with that file's
values; transformers resolves the file's shorthand (an int `size` is a shortest edge for
CLIP's processor, a square for ViT's and DPT's). Two paths, one geometry:
- `from_pil`: 8-bit images (files: reference and style images) through the processor
  itself: PIL resampling on 8-bit data, as the network saw in training and as every
  pipeline feeds it;
- `__call__`: float images [B,3,H,W] in [0,1] (renders: differentiable) in torch: the same
  output size, filter and centre crop, then the same statistics. torch's antialiased
  bilinear / bicubic kernels are PIL's (Pillow's support-scaled filters, bicubic a = -0.5),
  so the two differ only by the processor's 8-bit arithmetic (PIL rounds to 8 bits after
  each separable pass): at most one 8-bit level on natural images (tests/test_processing.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

# PIL's resampling codes (PIL.Image.Resampling) -> torch's antialiased modes.
_MODES = {2: "bilinear", 3: "bicubic"}


def processor_class(config: dict[str, Any]) -> Any:
    """The PIL-backend transformers class a preprocessor_config.json names."""
    import transformers

    name = config.get("image_processor_type") or str(config.get("feature_extractor_type", "")).replace(
        "FeatureExtractor", "ImageProcessor")
    if name.endswith("Fast"):
        name = name[:-4]
    cls = getattr(transformers, f"{name}Pil", None)
    if cls is None:
        raise ValueError(f"preprocessor config names {name or 'no processor'!r}: no PIL image processor of that name")
    return cls


class ImageProcessing:
    def __init__(self, config: dict[str, Any]) -> None:
        """config: a preprocessor_config.json's contents."""
        self.processor = processor_class(config).from_dict(config)
        p = self.processor
        self.resample = int(p.resample)
        if p.do_resize and self.resample not in _MODES:
            raise ValueError(f"{type(p).__name__}: resampling filter {self.resample} is not bilinear (2) or bicubic (3)")
        if getattr(p, "do_pad", False):
            raise ValueError(f"{type(p).__name__}: padding processors are not supported")
        self.crop = (p.crop_size.height, p.crop_size.width) if getattr(p, "do_center_crop", False) else None
        # Float inputs x in [0,1] stand for 8-bit values 255 x, which the processor rescales.
        scale = p.rescale_factor * 255 if p.do_rescale else 255.0
        mean = torch.tensor(p.image_mean if p.do_normalize else (0.0, 0.0, 0.0), dtype=torch.float32)
        std = torch.tensor(p.image_std if p.do_normalize else (1.0, 1.0, 1.0), dtype=torch.float32)
        self.scale, self.mean, self.std = scale, mean.reshape(1, 3, 1, 1), std.reshape(1, 3, 1, 1)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) after the resize (before the crop), as the processor computes it."""
        p = self.processor
        if not p.do_resize:
            return height, width
        size = p.size
        if size.shortest_edge:  # transformers' get_resize_output_image_size, default_to_square=False
            short, long = (height, width) if height <= width else (width, height)
            new_short, new_long = size.shortest_edge, int(size.shortest_edge * long / short)
            return (new_short, new_long) if height <= width else (new_long, new_short)
        out_h, out_w = size.height, size.width
        keep, multiple = getattr(p, "keep_aspect_ratio", False), getattr(p, "ensure_multiple_of", 1)
        if not keep and multiple == 1:
            return out_h, out_w
        # DPT: the scale nearer 1 for both sides when keeping the aspect, then a multiple of.
        sh, sw = out_h / height, out_w / width
        if keep:
            sh = sw = sw if abs(1 - sw) < abs(1 - sh) else sh
        return _multiple_of(sh * height, multiple), _multiple_of(sw * width, multiple)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [0,1] -> the network's pixel_values [B,3,h,w] (float32)."""
        x = images.float()
        h, w = self.output_size(*x.shape[-2:])
        if (h, w) != tuple(x.shape[-2:]):
            x = torch.nn.functional.interpolate(x, (h, w), mode=_MODES[self.resample], align_corners=False,
                                                antialias=True)
        if self.crop is not None:
            ch, cw = self.crop
            top, left = (x.shape[-2] - ch) // 2, (x.shape[-1] - cw) // 2
            if top < 0 or left < 0:
                raise ValueError(f"image of {x.shape[-2]}x{x.shape[-1]} is smaller than the processor's crop {ch}x{cw}")
            x = x[..., top:top + ch, left:left + cw]
        x = x * self.scale
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def from_pil(self, images: list[Any]) -> torch.Tensor:
        """8-bit PIL images -> pixel_values [B,3,h,w] (float32), by the processor itself."""
        return torch.from_numpy(np.stack(self.processor(images=images)["pixel_values"])).float()


def _multiple_of(value: float, multiple: int) -> int:
    """DPT's constrain_to_multiple_of (no upper bound): the nearest multiple."""
    return round(value / multiple) * multiple


def to_pil(image: torch.Tensor) -> Any:
    """[H,W,3] in [0,1] -> an 8-bit PIL image (exact for images read from 8-bit files)."""
    from PIL import Image

    return Image.fromarray((image.detach().float().clamp(0, 1) * 255).round().byte().cpu().numpy(), "RGB")
