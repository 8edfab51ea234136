"""Stable unCLIP 2.1 ("unclip"): the image-embedding-conditioned diffusion model the MS
and aug-SDS terms guide with (C_m as its image_embeds)."""
from __future__ import annotations

from pathlib import Path

from ..catalog import HubFiles, Licence, diffusers_files
from ..full_size import TEXT_H, stable_diffusion
from ..layouts import ALL_KINDS, CLIP_BPE, Layout, published, variants
from ..loaders import load_sd
from ..tiny import (EMBED_DIM, TINY_SIDE, VIT_H, tiny_clip_vision, tiny_feature_extractor, tiny_stable_diffusion,
                    tiny_unet)
from . import ModelRole, Network, Processor, register
from .sd import FILES as SD_FILES

# Stability AI removed its whole stable-diffusion-2-* family from the hub around 2025-11-13;
# projects moved to the community copies under sd2-community (huggingface/optimum-habana
# PR 2363, Nerogar/OneTrainer issue 1129, CompVis/cleandift issue 17). The old id stays as a
# second source: a machine that downloaded it before still holds it in its cache.
SOURCES = ("sd2-community/stable-diffusion-2-1-unclip", "stabilityai/stable-diffusion-2-1-unclip")
# The licence travels with the community copy (a copy of the removed original, its card and
# LICENSE.md included).
LICENCE = Licence("CreativeML OpenRAIL++-M", f"https://huggingface.co/{SOURCES[0]}/blob/main/LICENSE.md")
PUBLISHED = "stabilityai/stable-diffusion-2-1-unclip"  # its configs as vendored (read before the removal)

# sd2-community's copy of Stability AI's removed repository, file for file (its tree holds
# e.g. image_normalizer/diffusion_pytorch_model.fp16.bin, as the original's did).
LAYOUT = Layout(
    SOURCES[0],
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
     *variants("image_encoder", "model", (".safetensors", ".fp16.safetensors")),
     "image_encoder/pytorch_model.bin", "image_encoder/pytorch_model.fp16.bin",
     "image_noising_scheduler/scheduler_config.json",
     *variants("image_normalizer", "diffusion_pytorch_model", ALL_KINDS),
     "scheduler/scheduler_config.json",
     *variants("text_encoder", "model", (".safetensors", ".fp16.safetensors")),
     "text_encoder/pytorch_model.bin", "text_encoder/pytorch_model.fp16.bin",
     *(f"tokenizer/{f}" for f in CLIP_BPE),
     *variants("unet", "diffusion_pytorch_model", ALL_KINDS), *variants("vae", "diffusion_pytorch_model", ALL_KINDS)),
    {"model_index.json": "StableUnCLIPImg2ImgPipeline", "unet/config.json": "UNet2DConditionModel",
     "vae/config.json": "AutoencoderKL", "text_encoder/config.json": "CLIPTextModel",
     "image_encoder/config.json": "CLIPVisionModelWithProjection",
     "image_normalizer/config.json": "StableUnCLIPImageNormalizer",
     "image_noising_scheduler/scheduler_config.json": "DDPMScheduler"},
)

# The repository's image processor (for its image_encoder, the "clip" role), as vendored:
# OpenCLIP ViT-H/14's, the tower it ships (unCLIP's own file was not readable and its sibling
# stable-diffusion-2-1-unclip-small shows the same values, published/SOURCES.md).
PROCESSOR = Processor("feature_extractor/preprocessor_config.json",
                      ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "preprocessor_config.json"))


def tiny_unclip(out_dir: Path) -> None:
    """Stable unCLIP (stable-diffusion-2-1-unclip): its published model_index, scheduler
    (v-prediction) and image_normalizer (1024-d); a UNet whose class labels are the
    projected 2048-d image embedding ++ noise-level embedding; the noising scheduler; the
    OpenCLIP ViT-H tower in image_encoder/ with its 1024-d projection. The UNet's and the
    noising scheduler's files were not readable (published/SOURCES.md): their unCLIP keys
    come from Stability's v2-1-stable-unclip-h-inference.yaml (adm_in_channels 2048,
    use_linear_in_transformer, noise_aug_config's squaredcos_cap_v2 schedule of 1000 steps)."""
    from diffusers import DDPMScheduler
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer

    tiny_stable_diffusion(out_dir, PUBLISHED)
    tiny_unet(out_dir / "unet", class_embed_type="projection", projection_class_embeddings_input_dim=2 * EMBED_DIM,
              use_linear_projection=True)
    normalizer = {k: v for k, v in published(PUBLISHED, "image_normalizer/config.json").items()
                  if not k.startswith("_")}
    StableUnCLIPImageNormalizer(**normalizer).save_pretrained(out_dir / "image_normalizer")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").save_pretrained(
        out_dir / "image_noising_scheduler")
    tiny_clip_vision(out_dir / "image_encoder", VIT_H, "models/image_encoder/config.json")
    tiny_feature_extractor(out_dir / "feature_extractor", PROCESSOR.published_config(), TINY_SIDE)


def _normalizer() -> object:
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer

    return StableUnCLIPImageNormalizer(embedding_dim=1024)


def _noising() -> object:
    from diffusers import DDPMScheduler

    return DDPMScheduler(beta_schedule="squaredcos_cap_v2")


UNET = dict(sample_size=96, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True,
            class_embed_type="projection", projection_class_embeddings_input_dim=2048)

register(ModelRole(
    "unclip", order=4, sources=SOURCES,
    files=HubFiles((*SD_FILES, *diffusers_files("image_normalizer"),
                    ("image_noising_scheduler/scheduler_config.json",))),
    licence=LICENCE, layout=LAYOUT, tiny=tiny_unclip,
    network=Network(load_sd, {**stable_diffusion(UNET, TEXT_H, "v_prediction"), "normalizer": _normalizer,
                              "noising": _noising},
                    conditioning=("text_encoder",), processor=None),
))
