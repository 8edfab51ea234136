"""Zero-1-to-3 XL ("zero123"): the view-conditioned diffusion model of the reference-view
and SGC terms, in diffusers' layout; its CLIP ViT-L/14 image tower loads apart
("zero123/image_encoder") and only conditions."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from ..catalog import MIT, HubFiles, card, diffusers_files, transformers_files
from ..full_size import clip_vision, ddim, sd_vae, unet
from ..layouts import Layout, published
from ..loaders import image_tower, load_zero123
from ..tiny import SD15, TINY_SIDE, tiny_feature_extractor, tiny_scheduler, tiny_unet, tiny_vae, write_json
from . import MODEL, ModelRole, Network, Processor, register

REPO = "ashawkey/zero123-xl-diffusers"

# Weights stored in half precision under the plain names (vae 167 MB, unet 1.72 GB); the
# camera projection is `clip_camera_projection/` (CLIPCameraProjection, key proj.*).
LAYOUT = Layout(
    REPO,
    ("https://huggingface.co/ashawkey/zero123-xl-diffusers/tree/main",
     "https://huggingface.co/ashawkey/zero123-xl-diffusers/tree/main/clip_camera_projection",
     "https://huggingface.co/ashawkey/zero123-xl-diffusers/tree/main/unet",
     "https://huggingface.co/ashawkey/zero123-xl-diffusers/tree/4fb334ab23d7c0921d141ab4519eec49761b39e8/vae",
     "https://huggingface.co/Manojb/zero123-xl-diffusers/tree/main/image_encoder (Cloned from "
     "ashawkey/zero123-xl-diffusers)",
     "https://huggingface.co/ashawkey/zero123-xl-diffusers/blob/main/clip_camera_projection/config.json"),
    ("README.md", "model_index.json", "clip_camera_projection/config.json",
     "clip_camera_projection/diffusion_pytorch_model.safetensors", "clip_camera_projection/zero123.py",
     "feature_extractor/preprocessor_config.json", "image_encoder/config.json", "image_encoder/model.safetensors",
     "scheduler/scheduler_config.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
     "vae/config.json", "vae/diffusion_pytorch_model.safetensors"),
    {"model_index.json": "Zero123Pipeline", "unet/config.json": "UNet2DConditionModel",
     "vae/config.json": "AutoencoderKL", "image_encoder/config.json": "CLIPVisionModelWithProjection",
     "clip_camera_projection/config.json": "CLIPCameraProjection"},
)

# Its image tower's processor, as vendored: OpenAI CLIP ViT-L/14's (published/SOURCES.md).
PROCESSOR = Processor("feature_extractor/preprocessor_config.json",
                      ("openai/clip-vit-large-patch14", "preprocessor_config.json"))


def tiny_zero123(out_dir: Path) -> None:
    """Zero-1-to-3 XL in zero123-xl-diffusers' layout: an 8-channel UNet on 32² latents of a
    four-level (f8) VAE, so 256² images as the model was trained (loaders.ZERO123_SIZE;
    Zero-1-to-3's sd-objaverse-finetune-c_concat-256.yaml: in_channels 8, image_size 32);
    the camera projection as published (768 + 4 -> 768); the ViT-L/14 tower with OpenAI
    CLIP-L's processor. Its UNet, VAE and scheduler files were not readable: they are SD's
    (Zero-1-to-3 is fine-tuned from it), with the yaml's changes."""
    from ..zero123_parts import CLIPCameraProjection

    out_dir.mkdir(parents=True, exist_ok=True)
    projection = {k: v for k, v in published(REPO, "clip_camera_projection/config.json").items()
                  if not k.startswith("_")}
    embed = projection["embedding_dim"]
    tiny_unet(out_dir / "unet", cross_dim=embed, sample_size=32, in_channels=8)
    tiny_vae(out_dir / "vae", levels=4)
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                   num_attention_heads=4, image_size=TINY_SIDE, patch_size=8,
                                                   projection_dim=embed)).save_pretrained(out_dir / "image_encoder")
    tiny_scheduler(out_dir / "scheduler", SD15, _class_name="DDIMScheduler")
    tiny_feature_extractor(out_dir / "feature_extractor", PROCESSOR.published_config(), TINY_SIDE)
    CLIPCameraProjection(**projection).save_pretrained(out_dir / "clip_camera_projection")
    write_json(out_dir / "model_index.json", {
        "_class_name": "Zero123Pipeline", "_diffusers_version": "0.42.1",
        "clip_camera_projection": ["zero123", "CLIPCameraProjection"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]})


def _projection() -> Any:
    from ..zero123_parts import CLIPCameraProjection

    return CLIPCameraProjection(768, 4)


# Zero-1-to-3 conditions on OpenAI CLIP ViT-L/14 (768 + 4 pose values -> 772).
VIT_L = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
             patch_size=14, projection_dim=768)

register(ModelRole(
    "zero123", order=6, sources=(REPO,),
    files=HubFiles((("model_index.json",), ("scheduler/scheduler_config.json",), *diffusers_files("unet"),
                    *diffusers_files("vae"), *diffusers_files("clip_camera_projection"),
                    *transformers_files("image_encoder"), ("feature_extractor/preprocessor_config.json",))),
    licence=card(REPO, f"{MIT} (Zero-1-to-3 XL; model card)"), layout=LAYOUT, tiny=tiny_zero123,
    network=Network(load_zero123, {"unet": partial(unet, dict(sample_size=32, cross_attention_dim=768, in_channels=8)),
                                   "vae": sd_vae, "scheduler": partial(ddim, "epsilon"), "proj": _projection},
                    conditioning=(), processor=None),
    parts={"image_encoder": Network(partial(image_tower, "zero123", "image_encoder"),
                                    {MODEL: partial(clip_vision, VIT_L)}, conditioning="all", processor=PROCESSOR)},
))
