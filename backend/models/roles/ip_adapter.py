"""IP-Adapter for SD 1.5 ("ip_adapter"): an image prompt for Stable Diffusion (VPCSM). Its
weights are read into SD's UNet once (encoders.ip_adapter, loaders.ip_adapter_weights), so
the store loads only its ViT-H image tower ("ip_adapter/image_encoder"), which only
conditions."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ..catalog import APACHE, HubFiles, card, transformers_files
from ..full_size import VIT_H, clip_vision
from ..layouts import Layout, published
from ..loaders import IP_ADAPTER_WEIGHTS, image_tower
from ..tiny import VIT_H as VIT_H_REPO, tiny_clip_vision, tiny_stable_diffusion
from . import MODEL, ModelRole, Network, Processor, register

REPO = "h94/IP-Adapter"

LAYOUT = Layout(
    REPO,
    ("https://huggingface.co/h94/IP-Adapter/tree/3cf3eb82240920f904900a11faf2e1b62ea3b610",
     "https://huggingface.co/h94/IP-Adapter/tree/55964dca626aad0a3c7770d902c782a98806d795/models/image_encoder",
     "https://huggingface.co/RyanJDick/ip_adapter_sd_image_encoder/commit/d16c3b94f5a4585f93c4fcf4fb004cac2a9e96ca"
     " (models/image_encoder at 0859e809: config.json, model.safetensors)",
     "https://huggingface.co/InvokeAI/ip_adapter_sd15/tree/69863778f955dd2c95999753e8643fa141116f71"
     " (models/ip-adapter_sd15.bin at 5c2eae7d)"),
    ("README.md", "fig1.png", "models/ip-adapter_sd15.bin", "models/ip-adapter_sd15.safetensors",
     "models/ip-adapter_sd15_light.safetensors", "models/ip-adapter-plus_sd15.safetensors",
     "models/image_encoder/config.json", "models/image_encoder/model.safetensors",
     "models/image_encoder/pytorch_model.bin", "sdxl_models/ip-adapter_sdxl.safetensors",
     "sdxl_models/image_encoder/config.json", "sdxl_models/image_encoder/model.safetensors"),
    {"models/image_encoder/config.json": "CLIPVisionModelWithProjection"},
)


def tiny_ip_adapter(out_dir: Path, sd_dir: Path | None = None) -> None:
    """IP-Adapter (h94/IP-Adapter's SD 1.5 layout): models/ip-adapter_sd15.safetensors with
    image_proj.* (the published 1024-d ViT-H embedding -> 4 tokens) and
    ip_adapter.<k>.to_{k,v}_ip.weight for the k-th cross-attention layer (k = 1, 3, 5, ... in
    attn_processors order), plus models/image_encoder/ (its published config, toy width)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    sd_dir = sd_dir or out_dir.parent / "sd"
    if not (sd_dir / "unet").exists():
        tiny_stable_diffusion(sd_dir)
    unet = UNet2DConditionModel.from_pretrained(sd_dir, subfolder="unet")
    cross, channels = unet.config.cross_attention_dim, list(unet.config.block_out_channels)
    embed_dim = published(VIT_H_REPO, "models/image_encoder/config.json")["projection_dim"]
    tensors = {"image_proj.proj.weight": torch.randn(4 * cross, embed_dim) * 0.02,
               "image_proj.proj.bias": torch.zeros(4 * cross),
               "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = channels[::-1][int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        for kv in ("k", "v"):
            tensors[f"ip_adapter.{key}.to_{kv}_ip.weight"] = torch.randn(hidden, cross) * 0.05
        key += 2
    models = out_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(models / IP_ADAPTER_WEIGHTS))
    tiny_clip_vision(models / "image_encoder", VIT_H_REPO, "models/image_encoder/config.json")


register(ModelRole(
    "ip_adapter", order=7, sources=(REPO,),
    files=HubFiles(((f"models/{IP_ADAPTER_WEIGHTS}",), *transformers_files("models/image_encoder"))),
    licence=card(REPO, APACHE), layout=LAYOUT, tiny=tiny_ip_adapter, subfolder="models", network=None,
    # The repository publishes no processor: IP-Adapter's own ip_adapter.py and diffusers'
    # load_ip_adapter build CLIPImageProcessor's defaults at the tower's size.
    parts={"image_encoder": Network(partial(image_tower, "ip_adapter", "image_encoder"),
                                    {MODEL: partial(clip_vision, VIT_H)}, conditioning="all",
                                    processor=Processor(None, None))},
))
