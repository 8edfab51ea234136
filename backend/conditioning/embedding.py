"""The modality embedding C_m (XBind Sec. III-B): ImageBind embeds each given prompt, each
embedding is normalised (ImageBind scales text by a learnt logit scale and audio by 20),
the job's weights mix them, and the sum is normalised again. Images are averaged first, so
"images" carries one weight however many references there are.
"""
from __future__ import annotations

import numpy as np
import torch

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


@torch.no_grad()
def modality_embedding(model, tokenizer, prompt: dict) -> torch.Tensor:  # noqa: ANN001 (ImageBind, tokenizer)
    """prompt: a validated job prompt {text?, images, audio?, weights}. -> C_m [D], unit length."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    weights = {"text": 1.0, "images": 1.0, "audio": 1.0, **prompt.get("weights", {})}
    parts: list[torch.Tensor] = []
    if prompt.get("text") and weights["text"] > 0:
        ids = tokenizer([prompt["text"]], padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt").input_ids.to(device)
        parts.append(weights["text"] * _unit(model.embed("text", ids))[0])
    if prompt.get("images") and weights["images"] > 0:
        size = model.cfg.image_size
        embs = [_unit(model.embed("vision", image_tensor(p, size).to(device, dtype)))[0] for p in prompt["images"]]
        parts.append(weights["images"] * _unit(torch.stack(embs).mean(0)))
    if prompt.get("audio") and weights["audio"] > 0:
        clips = audio_clips(read_audio(prompt["audio"]))[None].to(device, dtype)
        parts.append(weights["audio"] * _unit(model.embed("audio", clips))[0])
    if not parts:
        raise PromptError("nothing to condition on: give text, images or audio with a weight above 0")
    return _unit(torch.stack(parts).sum(0))
