"""The loaded networks as functions of images: resizing and normalising as each was trained
(CLIP's, ImageNet's or DPT's statistics) in the store's dtype, outputs in float32. Images
are [B,3,H,W] in [0,1] unless said otherwise. Each call asks the store for its network
again: park() may have moved it off the GPU since.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import graphs
from .loaders import SDComponents, ip_adapter_weights
from .roles import DEFAULT_IDS, REWARD_TOKENIZER
from .store import ModelStore

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Images = Callable[[torch.Tensor], torch.Tensor]


def pixels(store: ModelStore, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Images:
    """[B,3,H,W] in [0,1] -> resized to size x size, normalised, in the store's dtype."""
    m = torch.tensor(mean, device=store.device).reshape(1, 3, 1, 1)
    s = torch.tensor(std, device=store.device).reshape(1, 3, 1, 1)

    def prep(images: torch.Tensor) -> torch.Tensor:
        x = images.to(store.device)
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(x, (size, size), mode="bilinear", align_corners=False)
        return ((x - m.to(x.device)) / s.to(x.device)).to(store.dtype)

    return prep


def clip_image_encoder(store: ModelStore, role: str = "clip") -> tuple[Images, int]:
    """-> (images -> CLIP image embeddings [B,D], the input size S images are resized to)."""
    size = int(store.get(role).config.image_size)
    prep = pixels(store, size, CLIP_MEAN, CLIP_STD)

    def encode(images: torch.Tensor) -> torch.Tensor:
        model = store.get(role)
        return graphs.call(model, lambda x: model(pixel_values=x).image_embeds, (prep(images),)).float()

    return encode, size


def ip_adapter(store: ModelStore, sd: SDComponents, role: str = "ip_adapter") -> Images:
    """IP-Adapter's attention layers put into sd.unet (once) -> its image encoder."""
    if getattr(sd.unet, "encoder_hid_proj", None) is None:
        sd.unet._load_ip_adapter_weights([ip_adapter_weights(store, role)])  # diffusers' own converter
        if store.device.type != "cpu":  # new layers are created in fp32 on the CPU
            sd.unet.to(device=store.device, dtype=store.dtype)
    return clip_image_encoder(store, f"{role}/image_encoder")[0]


def tiny_decoder(store: ModelStore, role: str = "taesd") -> Callable[[torch.Tensor], torch.Tensor]:
    """TAESD's decoder: latents [B,4,h,w] as the UNet sees them (VAE latents times its
    scaling factor) -> images [B,3,8h,8w] in [0,1], at about 1/17 of the SD VAE decoder's
    work (diffusers' AutoencoderTiny; scaling factor 1)."""
    model = store.get(role)
    dtype = next(model.parameters()).dtype

    def decode(z: torch.Tensor) -> torch.Tensor:
        taesd = store.get(role)
        x = graphs.call(taesd, lambda latents: taesd.decode(latents).sample,
                        (z.to(dtype) / model.config.scaling_factor,)).float()
        return ((x + 1) / 2).clamp(0, 1)

    return decode


def dino(store: ModelStore, role: str = "dino") -> Images:
    """DINO ViT: images -> global (CLS) features [B,D]."""
    prep = pixels(store, int(store.get(role).config.image_size), IMAGENET_MEAN, IMAGENET_STD)
    return lambda images: store.get(role)(pixel_values=prep(images)).last_hidden_state[:, 0].float()


def depth(store: ModelStore, role: str = "depth") -> Images:
    """Monocular depth: images -> relative inverse depth [B,h,w] (MiDaS/DPT convention:
    larger is nearer; unknown scale and shift)."""
    prep = pixels(store, int(store.get(role).config.image_size), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return lambda images: store.get(role)(pixel_values=prep(images)).predicted_depth.float()


def reward(store: ModelStore, text: str, role: str = "reward") -> Images:
    """CLIP-based human-preference reward (PickScore): images -> [B] = logit_scale ·
    cos(text, image), the text bound here."""
    model = store.get(role)
    tok = store.read_tokenizer(role, REWARD_TOKENIZER)
    ids = tok([text or ""], padding="max_length", truncation=True, max_length=77,
              return_tensors="pt").input_ids.to(store.device)
    with torch.no_grad():
        text_emb = torch.nn.functional.normalize(model.get_text_features(input_ids=ids).pooler_output.float(), dim=-1)
    prep = pixels(store, int(model.config.vision_config.image_size), CLIP_MEAN, CLIP_STD)
    scale = model.logit_scale.exp().float()

    def score(images: torch.Tensor) -> torch.Tensor:
        feats = store.get(role).get_image_features(pixel_values=prep(images)).pooler_output
        emb = torch.nn.functional.normalize(feats.float(), dim=-1)
        return scale * (emb @ text_emb.T)[:, 0]

    return score


def segmenter(store: ModelStore, text: str, role: str = "segmenter") -> Callable[[torch.Tensor], torch.Tensor]:
    """Text-prompted foreground (CLIPSeg): image [H,W,3] in [0,1] -> [H,W] probability of
    the object the text names ("the main object" without text)."""
    model = store.get(role)
    tok = store.read_tokenizer(role, DEFAULT_IDS[role])
    ids = tok([text or "the main object"], padding=True, truncation=True, return_tensors="pt").input_ids
    prep = pixels(store, int(model.config.vision_config.image_size), IMAGENET_MEAN, IMAGENET_STD)

    @torch.no_grad()
    def segment(image: torch.Tensor) -> torch.Tensor:
        logits = store.get(role)(input_ids=ids.to(store.device), pixel_values=prep(image.permute(2, 0, 1)[None])).logits
        logits = logits.reshape(1, 1, *logits.shape[-2:]).float()
        up = torch.nn.functional.interpolate(logits, image.shape[:2], mode="bilinear", align_corners=False)
        return torch.sigmoid(up[0, 0]).cpu()

    return segment
