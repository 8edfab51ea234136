"""Stable Diffusion 1.5 ("sd"): the text-to-image model CSM and the reference-view terms
guide with; IP-Adapter's base."""
from __future__ import annotations

from ..catalog import HubFiles, Licence, diffusers_files, transformers_files
from ..full_size import stable_diffusion
from ..layouts import ALL_KINDS, CLIP_BPE, Layout, variants
from ..loaders import load_sd
from ..tiny import tiny_stable_diffusion
from . import ModelRole, Network, register

REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# What loaders.load_sd reads of a diffusers Stable Diffusion repository (unCLIP's adds its own).
FILES = (("model_index.json",), ("scheduler/scheduler_config.json",), ("tokenizer/*",),
         *transformers_files("text_encoder"), *diffusers_files("unet"), *diffusers_files("vae"))

LAYOUT = Layout(
    REPO,
    ("https://huggingface.co/pcuenq/stable-diffusion-v1-5/commit/63641623774da2998a288384bd73dffe1a02f004"
     " (Duplicate from stable-diffusion-v1-5/stable-diffusion-v1-5: its full file list)",),
    ("README.md", "model_index.json", "feature_extractor/preprocessor_config.json",
     *variants("safety_checker", "model", (".safetensors", ".fp16.safetensors")),
     "safety_checker/pytorch_model.bin", "safety_checker/pytorch_model.fp16.bin",
     "scheduler/scheduler_config.json",
     *variants("text_encoder", "model", (".safetensors", ".fp16.safetensors")),
     "text_encoder/pytorch_model.bin", "text_encoder/pytorch_model.fp16.bin",
     *(f"tokenizer/{f}" for f in CLIP_BPE),
     *variants("unet", "diffusion_pytorch_model", ALL_KINDS),
     "unet/diffusion_pytorch_model.non_ema.bin", "unet/diffusion_pytorch_model.non_ema.safetensors",
     "v1-5-pruned-emaonly.ckpt", "v1-5-pruned-emaonly.safetensors", "v1-5-pruned.ckpt", "v1-5-pruned.safetensors",
     "v1-inference.yaml", *variants("vae", "diffusion_pytorch_model", ALL_KINDS)),
    {"model_index.json": "StableDiffusionPipeline", "unet/config.json": "UNet2DConditionModel",
     "vae/config.json": "AutoencoderKL", "text_encoder/config.json": "CLIPTextModel"},
)

# OpenAI CLIP ViT-L/14's text tower, as SD 1.5 ships it.
TEXT_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768)

register(ModelRole(
    "sd", order=3, sources=(REPO,), files=HubFiles(FILES),
    licence=Licence("CreativeML OpenRAIL-M", f"https://huggingface.co/{REPO}/blob/main/LICENSE.md"),
    layout=LAYOUT, tiny=tiny_stable_diffusion,
    network=Network(load_sd, stable_diffusion(dict(sample_size=64, cross_attention_dim=768), TEXT_L, "epsilon"),
                    conditioning=("text_encoder",), processor=None),
))
