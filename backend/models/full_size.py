"""The papers' networks at their published sizes with random weights (bench and the
estimator: perf/networks.py): the builders and sizes several roles share; each role's
record names its own (models/roles/, `Network.full_size`). Sizes from the hub models'
diffusers / transformers configs. Each builder is called inside the estimator's fake-tensor
mode where one is active, so it builds its modules when called, never before.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

# OpenCLIP ViT-H/14's image tower (unCLIP's and IP-Adapter's image_encoder, PickScore's vision).
VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
             patch_size=14, projection_dim=1024, hidden_act="gelu")
# OpenCLIP ViT-H/14's text tower as Stable Diffusion 2 / unCLIP ship it (23 of its 24 layers).
TEXT_H = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
              projection_dim=1024, hidden_act="gelu")


def clip_text(sizes: dict[str, Any]) -> Any:
    """A CLIP text encoder on CLIP's 49408-token vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **sizes))


def clip_vision(sizes: dict[str, Any]) -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(CLIPVisionConfig(**sizes))


def unet(sizes: dict[str, Any]) -> Any:
    """A UNet2DConditionModel: diffusers' defaults (Stable Diffusion 1's) with `sizes` changed."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**sizes)


def sd_vae() -> Any:
    """Stable Diffusion's f8 AutoencoderKL (shared by SD 1.5, unCLIP and Zero-1-to-3)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def ddim(prediction_type: str) -> Any:
    """Stable Diffusion's scaled-linear schedule as a DDIM scheduler."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, prediction_type=prediction_type)


def stable_diffusion(unet_sizes: dict[str, Any], text_sizes: dict[str, Any],
                     prediction_type: str) -> dict[str, Callable[[], Any]]:
    """A Stable Diffusion's parts by the names loaders.load_sd reads them under (its
    tokenizer is the store's)."""
    return {"text_encoder": partial(clip_text, text_sizes), "unet": partial(unet, unet_sizes), "vae": sd_vae,
            "scheduler": partial(ddim, prediction_type)}
