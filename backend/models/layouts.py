"""Each role's hub repository as published: its file list and the class each config names.

Taken from the repositories' own pages (the address beside each layout: a file tree, a
commit's file list, or a copy's "duplicate from" commit where the original's tree was not
readable here). The tiny models (tiny.py) are written in these layouts and the test hub
mirror serves them under these file names, so the download's file selection and the
loaders meet the real repositories' names, subfolders and config classes. Weights that a
layout lists but no loader reads (fp16 variants on a CPU, .bin beside safetensors, .ckpt
originals, cards) are served too, as the hub lists them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The repositories' configuration files as published, vendored under
# published/<owner>__<name>/<path> (published/SOURCES.md: where and when each was read). The
# tiny models are these scaled down, the estimator's random networks these at full size.
PUBLISHED = Path(__file__).parent / "published"


def published(repo: str, path: str) -> dict[str, Any]:
    """A vendored config file: repo "owner/name" (as read), path inside it."""
    return json.loads((PUBLISHED / repo.replace("/", "__") / path).read_text())


# The image processor configuration of each role whose repository publishes one
# (roles.PREPROCESSOR_CONFIGS), as vendored: the role's own file, or where that file was not
# readable (published/SOURCES.md) the one of the tower it ships (unCLIP's and PickScore's:
# OpenCLIP ViT-H/14's; Zero-1-to-3's: OpenAI CLIP ViT-L/14's), or for DPT-Hybrid its
# processor class's defaults. The tiny models ship these scaled, the estimator reads them.
PROCESSOR_SOURCES: dict[str, tuple[str, str] | dict[str, Any]] = {
    "clip": ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "preprocessor_config.json"),
    "zero123": ("openai/clip-vit-large-patch14", "preprocessor_config.json"),
    "dino": ("facebook/dino-vitb16", "preprocessor_config.json"),
    "depth": {"image_processor_type": "DPTImageProcessor"},
    "reward": ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "preprocessor_config.json"),
    "segmenter": ("CIDAS/clipseg-rd64-refined", "preprocessor_config.json"),
}


def processor_config(role: str) -> dict[str, Any]:
    """A role's image processor configuration at its published size (PROCESSOR_SOURCES)."""
    source = PROCESSOR_SOURCES[role]
    return dict(source) if isinstance(source, dict) else published(*source)


@dataclass(frozen=True)
class Layout:
    """files: repository paths (posix); classes: config file -> the class it names
    (`_class_name` of a diffusers config, `architectures[0]` of a transformers one, the
    pipeline class of model_index.json, `tokenizer_class` of a tokenizer_config.json)."""

    repo: str
    listed_at: tuple[str, ...]
    files: tuple[str, ...]
    classes: dict[str, str] = field(default_factory=dict)


def _variants(folder: str, stem: str, kinds: tuple[str, ...]) -> tuple[str, ...]:
    """A diffusers-style weights folder: `kinds` of ".safetensors", ".bin", ".fp16.safetensors",
    ".fp16.bin" for one stem, with the folder's config.json."""
    return (f"{folder}/config.json", *(f"{folder}/{stem}{k}" for k in kinds))


_ALL4 = (".safetensors", ".bin", ".fp16.safetensors", ".fp16.bin")
_CLIP_BPE = ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")

SD15 = Layout(
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    ("https://huggingface.co/pcuenq/stable-diffusion-v1-5/commit/63641623774da2998a288384bd73dffe1a02f004"
     " (Duplicate from stable-diffusion-v1-5/stable-diffusion-v1-5: its full file list)",),
    ("README.md", "model_index.json", "feature_extractor/preprocessor_config.json",
     *_variants("safety_checker", "model", (".safetensors", ".fp16.safetensors")),
     "safety_checker/pytorch_model.bin", "safety_checker/pytorch_model.fp16.bin",
     "scheduler/scheduler_config.json",
     *_variants("text_encoder", "model", (".safetensors", ".fp16.safetensors")),
     "text_encoder/pytorch_model.bin", "text_encoder/pytorch_model.fp16.bin",
     *(f"tokenizer/{f}" for f in _CLIP_BPE),
     *_variants("unet", "diffusion_pytorch_model", _ALL4),
     "unet/diffusion_pytorch_model.non_ema.bin", "unet/diffusion_pytorch_model.non_ema.safetensors",
     "v1-5-pruned-emaonly.ckpt", "v1-5-pruned-emaonly.safetensors", "v1-5-pruned.ckpt", "v1-5-pruned.safetensors",
     "v1-inference.yaml", *_variants("vae", "diffusion_pytorch_model", _ALL4)),
    {"model_index.json": "StableDiffusionPipeline", "unet/config.json": "UNet2DConditionModel",
     "vae/config.json": "AutoencoderKL", "text_encoder/config.json": "CLIPTextModel"},
)

# sd2-community's copy of Stability AI's removed repository, file for file (its tree holds
# e.g. image_normalizer/diffusion_pytorch_model.fp16.bin, as the original's did).
UNCLIP = Layout(
    "sd2-community/stable-diffusion-2-1-unclip",
    ("https://huggingface.co/stabilityai/stable-diffusion-2-1-unclip/tree/f9ed2a3dd672ab0cb2c662e0b32fef16a90c90d0",
     "https://huggingface.co/stabilityai/stable-diffusion-2-1-unclip/tree/main/text_encoder",
     "https://huggingface.co/stabilityai/stable-diffusion-2-1-unclip/tree/c49699e516831475065bb2c0461478f1b1ee41e3/unet",
     "https://huggingface.co/stabilityai/stable-diffusion-2-1-unclip/tree/e99f66a92bdcd1b0fb0d4b6a9b81b3b37d8bea44/vae",
     "https://huggingface.co/stabilityai/stable-diffusion-2-1-unclip/tree/f9ed2a3dd672ab0cb2c662e0b32fef16a90c90d0"
     "/image_encoder",
     "https://huggingface.co/stabilityai/stable-diffusion-2-1-unclip-small/commit/"
     "61fbd68d6f768266729b8dd2609a8e3bd73defb8 (the same pipeline's image_normalizer files)",
     "https://huggingface.co/sd2-community/stable-diffusion-2-1-unclip/blob/main/image_normalizer/"
     "diffusion_pytorch_model.fp16.bin"),
    ("README.md", "image.png", "model_index.json", "sd21-unclip-h.ckpt", "sd21-unclip-l.ckpt",
     "feature_extractor/preprocessor_config.json",
     *_variants("image_encoder", "model", (".safetensors", ".fp16.safetensors")),
     "image_encoder/pytorch_model.bin", "image_encoder/pytorch_model.fp16.bin",
     "image_noising_scheduler/scheduler_config.json",
     *_variants("image_normalizer", "diffusion_pytorch_model", _ALL4),
     "scheduler/scheduler_config.json",
     *_variants("text_encoder", "model", (".safetensors", ".fp16.safetensors")),
     "text_encoder/pytorch_model.bin", "text_encoder/pytorch_model.fp16.bin",
     *(f"tokenizer/{f}" for f in _CLIP_BPE),
     *_variants("unet", "diffusion_pytorch_model", _ALL4), *_variants("vae", "diffusion_pytorch_model", _ALL4)),
    {"model_index.json": "StableUnCLIPImg2ImgPipeline", "unet/config.json": "UNet2DConditionModel",
     "vae/config.json": "AutoencoderKL", "text_encoder/config.json": "CLIPTextModel",
     "image_encoder/config.json": "CLIPVisionModelWithProjection",
     "image_normalizer/config.json": "StableUnCLIPImageNormalizer",
     "image_noising_scheduler/scheduler_config.json": "DDPMScheduler"},
)

# Weights stored in half precision under the plain names (vae 167 MB, unet 1.72 GB); the
# camera projection is `clip_camera_projection/` (CLIPCameraProjection, key proj.*).
ZERO123_XL = Layout(
    "ashawkey/zero123-xl-diffusers",
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

IP_ADAPTER = Layout(
    "h94/IP-Adapter",
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

CLIP_L14 = Layout(
    "openai/clip-vit-large-patch14",
    ("https://huggingface.co/evilsocket/clip-vit-large-patch14/blob/main/vocab.json (Duplicated from "
     "openai/clip-vit-large-patch14)",),
    ("README.md", "config.json", "flax_model.msgpack", "model.safetensors", "preprocessor_config.json",
     "pytorch_model.bin", "tf_model.h5", "tokenizer.json", *_CLIP_BPE),
    {"config.json": "CLIPModel", "tokenizer_config.json": "CLIPTokenizer"},
)

DINO_B16 = Layout(
    "facebook/dino-vitb16",
    ("https://huggingface.co/facebook/dino-vitb16/tree/5d8edb1c2c6bc8f42bd159f8b53dad38f7f9a387",
     "https://huggingface.co/facebook/dino-vitb16/tree/refs%2Fpr%2F7"),
    ("README.md", "config.json", "model.safetensors", "preprocessor_config.json", "pytorch_model.bin",
     "tf_model.h5"),
    {"config.json": "ViTModel"},
)

DPT_HYBRID = Layout(
    "Intel/dpt-hybrid-midas",
    ("https://huggingface.co/Intel/dpt-hybrid-midas/tree/refs%2Fpr%2F5 (main's files plus the safetensors "
     "conversion; main may hold only pytorch_model.bin, which the catalog accepts)",),
    ("README.md", "config.json", "model.safetensors", "preprocessor_config.json", "pytorch_model.bin"),
    {"config.json": "DPTForDepthEstimation"},
)

PICKSCORE = Layout(
    "yuvalkirstain/PickScore_v1",
    ("https://huggingface.co/yuvalkirstain/PickScore_v1/tree/main",),
    ("README.md", "config.json", "merges.txt", "model.safetensors", "preprocessor_config.json", "pytorch_model.bin",
     "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"),
    {"config.json": "CLIPModel"},
)

CLIP_H14 = Layout(
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
    ("https://huggingface.co/hoaiht/CLIP-ViT-H-14-laion2B-s32B-b79K/commits/15485f63545ef3e71194832e1860e4f922be67fb"
     " (a copy's upload of the repository, file by file)",),
    ("README.md", "config.json", "open_clip_pytorch_model.bin", "preprocessor_config.json", "pytorch_model.bin",
     "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"),
    {"config.json": "CLIPModel"},
)

# The tokenizer as vocab.json + merges.txt only: no tokenizer.json in the repository.
CLIPSEG = Layout(
    "CIDAS/clipseg-rd64-refined",
    ("https://huggingface.co/CIDAS/clipseg-rd64-refined/tree/583b388deb98a04feb3e1f816dcdb8f3062ee205",
     "https://huggingface.co/CIDAS/clipseg-rd64-refined/tree/refs%2Fpr%2F6 (+ model.safetensors)"),
    ("README.md", "config.json", "preprocessor_config.json", "pytorch_model.bin", *_CLIP_BPE),
    {"config.json": "CLIPSegForImageSegmentation"},
)

TAESD = Layout(
    "madebyollin/taesd",
    ("https://huggingface.co/madebyollin/taesd/tree/73b7d1c8836d16997316fb94c4b36a9095442c1d",),
    ("README.md", "config.json", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors",
     "taesd_decoder.safetensors", "taesd_encoder.safetensors"),
    {"config.json": "AutoencoderTiny"},
)

# Role -> its published layout (clip is unCLIP's image_encoder; the tokenizer roles are the
# tokenizer files of their repositories).
LAYOUTS: dict[str, Layout] = {
    "sd": SD15, "unclip": UNCLIP, "clip": UNCLIP, "zero123": ZERO123_XL, "ip_adapter": IP_ADAPTER,
    "imagebind_tokenizer": CLIP_L14, "dino": DINO_B16, "depth": DPT_HYBRID, "reward": PICKSCORE,
    "reward_tokenizer": CLIP_H14, "segmenter": CLIPSEG, "taesd": TAESD,
}
