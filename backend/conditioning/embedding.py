"""The modality embedding C_m (XBind Sec. III-B): ImageBind embeds each given prompt and the
job's weights mix them, in two forms for the two uses:

- `unit`, the MS loss's target (a cosine: only the direction counts): each embedding
  normalised (ImageBind scales text by a learnt logit scale and audio by 20), mixed by the
  weights, normalised again;
- `unclip`, Stable unCLIP's image_embeds, at the scale unCLIP was trained on (raw OpenCLIP
  ViT-H image embeddings, which ImageBind's vision trunk and head are): as the public
  ImageBind -> unCLIP bridge Anything2Image feeds it (anything2image/api.py at fee2fed:
  vision and text with forward(..., normalize=False), audio postprocessed (unit length
  times 20), a mixture the convex combination by the weights, not renormalised; BindDiffusion
  main_bind.py the same for image and audio). Several images are averaged raw first, as
  Stability's own unCLIP sampler mixes image embeddings (scripts/streamlit/stableunclip.py).
  An image-only prompt gives unCLIP exactly ImageBind's raw image embedding.

Images are averaged first, so "images" carries one weight however many references there are.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..job import Prompt
from .audio import audio_clips, read_audio
from .image import load_image

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).reshape(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).reshape(1, 3, 1, 1)


class PromptError(ValueError):
    pass


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def image_tensor(path: str, size: int) -> torch.Tensor:
    """[1,3,size,size] CLIP-normalised, as upstream ImageBind prepares an image: shorter side
    resized to `size` with PIL's bicubic filter on 8-bit RGB, then the centre crop.
    Transparency is composited on white first: upstream's convert("RGB") would keep
    whatever colour hides under alpha 0, which is arbitrary and often black."""
    from PIL import Image

    rgba = load_image(path)
    rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
    image = Image.fromarray((rgb * 255).round().clamp(0, 255).byte().numpy(), "RGB")
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    scaled = (size, int(size * long / short))
    image = image.resize(scaled if w <= h else scaled[::-1], Image.BICUBIC)
    w, h = image.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    return (x - CLIP_MEAN) / CLIP_STD


@dataclass(frozen=True)
class ModalityEmbedding:
    """C_m [D] in its two forms (module docstring): unit length, and unCLIP's scale."""

    unit: torch.Tensor
    unclip: torch.Tensor


@torch.no_grad()
def modality_embedding(model, tokenizer, prompt: Prompt) -> ModalityEmbedding:  # noqa: ANN001 (ImageBind, tokenizer)
    """prompt: a job's (backend/job.Prompt), its files read."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    w = prompt.weights
    parts: list[tuple[float, torch.Tensor, torch.Tensor]] = []  # (weight, unit, unCLIP's form)
    if prompt.text and w.text > 0:
        ids = tokenizer([prompt.text], padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt").input_ids.to(device)
        raw = model.embed("text", ids, normalize=False)[0].float()
        parts.append((w.text, _unit(raw), raw))
    if prompt.images and w.images > 0:
        size = model.cfg.image_size
        raws = torch.stack([model.embed("vision", image_tensor(p, size).to(device, dtype), normalize=False)[0].float()
                            for p in prompt.images])
        parts.append((w.images, _unit(_unit(raws).mean(0)), raws.mean(0)))
    if prompt.audio and w.audio > 0:
        clips = audio_clips(read_audio(prompt.audio))[None].to(device, dtype)
        post = model.embed("audio", clips)[0].float()  # unit length times 20, averaged over the clips
        parts.append((w.audio, _unit(post), post))
    if not parts:
        raise PromptError("nothing to condition on: give text, images or audio with a weight above 0")
    total = sum(weight for weight, _, _ in parts)
    return ModalityEmbedding(unit=_unit(sum(weight * u for weight, u, _ in parts)),
                             unclip=sum(weight * e for weight, _, e in parts) / total)
