"""The loaded networks as functions of images, each image prepared as the network's own
image processor prepares it (models/processing.py, from the role's published
preprocessor_config.json), in the store's dtype, outputs in float32. Images are
[B,3,H,W] in [0,1] unless said otherwise. Networks a step calls with gradient (CLIP for
the MS loss, DINO, the reward) take the processor's geometry in torch; those that only
condition (the Zero-1-to-3 and IP-Adapter towers, depth on SGC's targets, the segmenter)
take 8-bit images through the processor itself, as a pipeline given the picture would.
Each call asks the store for its network again: park() may have moved it off the GPU since.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch._subclasses.fake_tensor import is_fake

from . import graphs
from .loaders import SDComponents, ip_adapter_weights
from .processing import to_pil
from .roles import default_id
from .store import ModelStore

Images = Callable[[torch.Tensor], torch.Tensor]


def pixels(store: ModelStore, role: str) -> Images:
    """[B,3,H,W] in [0,1] -> the role's pixel_values in the store's dtype, differentiable
    (the processor's geometry and statistics in torch)."""
    processing = store.image_processing(role)
    return lambda images: processing(images.to(store.device)).to(store.dtype)


def pixels_8bit(store: ModelStore, role: str) -> Images:
    """[B,3,H,W] in [0,1] -> the role's pixel_values in the store's dtype, each image as an
    8-bit picture through the processor itself (no gradient)."""
    processing = store.image_processing(role)

    def prep(images: torch.Tensor) -> torch.Tensor:
        if is_fake(images):  # the estimator's images have no pixels: the same shapes through torch
            return processing(images.to(store.device)).to(store.dtype)
        pil = [to_pil(image.permute(1, 2, 0)) for image in images]
        return processing.from_pil(pil).to(store.device, store.dtype)

    return prep


def clip_image_encoder(store: ModelStore, role: str = "clip", differentiable: bool = True) -> Images:
    """images -> CLIP image embeddings [B,D] (the tower's projection)."""
    prep = pixels(store, role) if differentiable else pixels_8bit(store, role)

    def encode(images: torch.Tensor) -> torch.Tensor:
        model = store.get(role)
        return graphs.call(model, lambda x: model(pixel_values=x).image_embeds, (prep(images),)).float()

    return encode


def ip_adapter(store: ModelStore, sd: SDComponents, role: str = "ip_adapter") -> Images:
    """IP-Adapter's attention layers put into sd.unet (once) -> its image encoder (a
    conditioning image: 8-bit, through the processor)."""
    if getattr(sd.unet, "encoder_hid_proj", None) is None:
        sd.unet._load_ip_adapter_weights([ip_adapter_weights(store, role)])  # diffusers' own converter
        if store.device.type != "cpu":  # new layers are created in fp32 on the CPU
            sd.unet.to(device=store.device, dtype=store.dtype)
    return clip_image_encoder(store, f"{role}/image_encoder", differentiable=False)


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
    """DINO ViT: images -> global (CLS) features [B,D] (differentiable)."""
    prep = pixels(store, role)
    return lambda images: store.get(role)(pixel_values=prep(images)).last_hidden_state[:, 0].float()


def depth(store: ModelStore, role: str = "depth") -> Images:
    """Monocular depth of conditioning images: images -> relative inverse depth [B,h,w] at
    the processor's size (MiDaS/DPT convention: larger is nearer; unknown scale and shift)."""
    prep = pixels_8bit(store, role)

    @torch.no_grad()
    def estimate(images: torch.Tensor) -> torch.Tensor:
        return store.get(role)(pixel_values=prep(images)).predicted_depth.float()

    return estimate


def reward(store: ModelStore, text: str, role: str = "reward") -> Images:
    """CLIP-based human-preference reward (PickScore): images -> [B] = logit_scale ·
    cos(text, image), the text bound here (differentiable in the images)."""
    model = store.get(role)
    tok = store.read_tokenizer(role, default_id("reward_tokenizer"))  # shipped apart from PickScore's weights
    ids = tok([text or ""], padding="max_length", truncation=True, max_length=77,
              return_tensors="pt").input_ids.to(store.device)
    with torch.no_grad():
        text_emb = torch.nn.functional.normalize(model.get_text_features(input_ids=ids).pooler_output.float(), dim=-1)
    prep = pixels(store, role)
    scale = model.logit_scale.exp().float()

    def score(images: torch.Tensor) -> torch.Tensor:
        feats = store.get(role).get_image_features(pixel_values=prep(images)).pooler_output
        emb = torch.nn.functional.normalize(feats.float(), dim=-1)
        return scale * (emb @ text_emb.T)[:, 0]

    return score


def segmenter(store: ModelStore, text: str, role: str = "segmenter") -> Callable[[torch.Tensor], torch.Tensor]:
    """Text-prompted foreground (CLIPSeg): image [H,W,3] in [0,1] -> [H,W] probability of
    the object the text names ("the main object" without text). The image goes through
    CLIPSeg's processor (352² as published; the vision tower interpolates its position
    embeddings), the logits are resized back to the image bilinearly, as transformers'
    CLIPSeg example does."""
    model = store.get(role)
    tok = store.read_tokenizer(role, default_id(role))
    ids = tok([text or "the main object"], padding=True, truncation=True, return_tensors="pt").input_ids
    prep = pixels_8bit(store, role)

    @torch.no_grad()
    def segment(image: torch.Tensor) -> torch.Tensor:
        values = prep(image.permute(2, 0, 1)[None])
        logits = store.get(role)(input_ids=ids.to(store.device), pixel_values=values,
                                 interpolate_pos_encoding=True).logits
        logits = logits.reshape(1, 1, *logits.shape[-2:]).float()
        up = torch.nn.functional.interpolate(logits, image.shape[:2], mode="bilinear", align_corners=False)
        return torch.sigmoid(up[0, 0]).cpu()

    return segment
