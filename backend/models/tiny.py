"""Randomly initialised miniature models saved in the real on-disk formats, so tests (and
`models: "tiny"` jobs) run the real loading code with no download.

`build_tiny(out_dir)` writes one folder per role, <out_dir>/<role> (roles: BUILDERS; the
store reads each with its real loader). Each folder has the layout of the role's hub
repository as published (layouts.py): the same subfolders, file names and config classes,
so a tiny folder served under the real id is what a download of the real one gives.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from .layouts import processor_config, published

TINY_VERSION = 4  # bump when a builder changes, so cached folders are rebuilt


def tiny_tokenizer(out_dir: Path, fast_file: bool = False) -> None:
    """A byte-level BPE CLIP tokenizer with every single byte (and its end-of-word form) in
    the vocabulary, so any text tokenises. Written as the CLIP repositories publish it:
    vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json, and with
    fast_file the tokenizers library's tokenizer.json too (Stable Diffusion's and CLIPSeg's
    repositories have none; PickScore's and OpenAI CLIP's have one)."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars + [c + "</w>" for c in chars]:
        vocab[c] = len(vocab)
    merges = [("t", "h"), ("h", "e</w>"), ("a", "n"), ("i", "n"), ("e", "r")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77).save_pretrained(out_dir)
    if not fast_file:
        (out_dir / "tokenizer.json").unlink()
    (out_dir / "vocab.json").write_text(json.dumps(vocab))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


# The published repositories whose vendored configs the tiny models scale down (layouts.py).
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
UNCLIP = "stabilityai/stable-diffusion-2-1-unclip"
VIT_H = "h94/IP-Adapter"  # models/image_encoder: OpenCLIP ViT-H/14, the tower unCLIP and IP-Adapter share
ZERO123 = "ashawkey/zero123-xl-diffusers"
# Sizes of the miniatures: every width and depth shrinks; what crosses a model boundary keeps
# its published size (the 1024-d image embeddings C_m, unCLIP's 2048-d class labels, the
# 768-d Zero-1-to-3 conditioning), and so do classes, schedules, prediction types and
# processors' filters and statistics. Images: 32² for the Stable Diffusions (two VAE levels),
# 256² for Zero-1-to-3, whose input side is checked (loaders.ZERO123_SIZE).
TINY_SIDE = 32
# Keys of a transformers config.json that are not the config class's arguments.
_NOT_CONFIG = ("architectures", "model_type", "transformers_version", "torch_dtype")
EMBED_DIM = 1024  # OpenCLIP ViT-H/14's image embedding = ImageBind's = unCLIP's image_embeds


def _scaled_processor(config: dict, side: int) -> dict:
    """A published preprocessor config with its sizes scaled to side (the published ratio of
    resize to crop kept), every other value as published."""
    out = dict(config)
    published = config.get("crop_size", config.get("size"))
    base = published if isinstance(published, int) else (published.get("height") or published.get("shortest_edge"))
    for key in ("size", "crop_size"):
        value = config.get(key)
        if isinstance(value, int):
            out[key] = round(value * side / base)
        elif isinstance(value, dict):
            out[key] = {k: round(v * side / base) for k, v in value.items()}
    return out


def tiny_feature_extractor(out_dir: Path, config: dict, side: int) -> None:
    """An image processor config (layouts.processor_config) scaled to its tower's side, as
    out_dir/preprocessor_config.json."""
    _write_json(out_dir / "preprocessor_config.json", _scaled_processor(config, side))


def tiny_text_encoder(out_dir: Path, vocab_size: int, hidden: int = 32) -> None:
    """SD 1.5's CLIPTextModel config (published) at toy width, on the tiny vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = {k: v for k, v in published(SD15, "text_encoder/config.json").items() if not k.startswith("_")}
    cfg.update(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
               num_attention_heads=4, projection_dim=hidden, bos_token_id=vocab_size - 2,
               eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    CLIPTextModel(CLIPTextConfig(**cfg)).save_pretrained(out_dir)


def tiny_unet(out_dir: Path, cross_dim: int = 32, sample_size: int = TINY_SIDE // 2, **extra: object) -> None:
    """SD 1.5's published UNet config at toy width and two levels (its first block type and
    its last kept); `extra`: the keys a variant changes (unCLIP's projected class labels,
    Zero-1-to-3's 8 input channels)."""
    from diffusers import UNet2DConditionModel

    cfg = {k: v for k, v in published(SD15, "unet/config.json").items() if not k.startswith("_")}
    down, up = cfg["down_block_types"], cfg["up_block_types"]
    cfg.update(sample_size=sample_size, layers_per_block=1, block_out_channels=(32, 64),
               down_block_types=(down[0], down[-1]), up_block_types=(up[0], up[-1]), cross_attention_dim=cross_dim,
               norm_num_groups=16, **extra)
    UNet2DConditionModel.from_config(cfg).save_pretrained(out_dir)


def tiny_vae(out_dir: Path, levels: int = 2) -> None:
    """SD 1.5's published AutoencoderKL config at toy width with `levels` levels (f = 2^(levels-1))."""
    from diffusers import AutoencoderKL

    cfg = {k: v for k, v in published(SD15, "vae/config.json").items() if not k.startswith("_")}
    cfg.update(block_out_channels=(16, 32, 32, 32)[:levels], layers_per_block=1, norm_num_groups=16,
               down_block_types=cfg["down_block_types"][:levels], up_block_types=cfg["up_block_types"][:levels],
               sample_size=TINY_SIDE * 2 ** (levels - 2))
    AutoencoderKL.from_config(cfg).save_pretrained(out_dir)


def tiny_taesd(out_dir: Path) -> None:
    """madebyollin/taesd's published config (scaling factor, shifts, activation as published)
    at toy width, with tiny_vae's 2x latent stride (two blocks: one upsampling)."""
    from diffusers import AutoencoderTiny

    cfg = {k: v for k, v in published("madebyollin/taesd", "config.json").items() if not k.startswith("_")}
    cfg.update(encoder_block_out_channels=(16, 16), decoder_block_out_channels=(16, 16),
               num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1))
    AutoencoderTiny.from_config(cfg).save_pretrained(out_dir)


def tiny_scheduler(out_dir: Path, repo: str = SD15, **changes: object) -> None:
    """A published scheduler_config.json as published (class, betas, prediction type)."""
    _write_json(out_dir / "scheduler_config.json", {**published(repo, "scheduler/scheduler_config.json"), **changes})


def tiny_stable_diffusion(out_dir: Path, repo: str = SD15, side: int = TINY_SIDE, vae_levels: int = 2) -> None:
    """A diffusers Stable Diffusion folder: tokenizer, text_encoder, unet, vae, scheduler,
    feature_extractor and model_index.json (as published; the safety checker's weights are
    left out: no loader reads them). side: the image size its configs give (the UNet's
    sample_size times the VAE's factor 2^(vae_levels-1)); side 512 with vae_levels 4 has
    the real model's geometry (512² images, 64² latents), which reference code that
    hard-codes it needs (tests/fixtures/guidance_parity)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tiny_tokenizer(out_dir / "tokenizer")
    from transformers import CLIPTokenizer

    vocab_size = len(CLIPTokenizer.from_pretrained(out_dir / "tokenizer"))
    tiny_text_encoder(out_dir / "text_encoder", vocab_size)
    tiny_unet(out_dir / "unet", sample_size=side // 2 ** (vae_levels - 1))
    tiny_vae(out_dir / "vae", levels=vae_levels)
    tiny_scheduler(out_dir / "scheduler", repo)
    tiny_feature_extractor(out_dir / "feature_extractor", published(SD15, "feature_extractor/preprocessor_config.json"),
                           TINY_SIDE)
    _write_json(out_dir / "model_index.json", published(repo, "model_index.json"))


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

    tiny_stable_diffusion(out_dir, UNCLIP)
    tiny_unet(out_dir / "unet", class_embed_type="projection", projection_class_embeddings_input_dim=2 * EMBED_DIM,
              use_linear_projection=True)
    normalizer = {k: v for k, v in published(UNCLIP, "image_normalizer/config.json").items() if not k.startswith("_")}
    StableUnCLIPImageNormalizer(**normalizer).save_pretrained(out_dir / "image_normalizer")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").save_pretrained(
        out_dir / "image_noising_scheduler")
    tiny_clip_vision(out_dir / "image_encoder", VIT_H, "models/image_encoder/config.json")
    tiny_feature_extractor(out_dir / "feature_extractor", processor_config("clip"), TINY_SIDE)


def tiny_clip_vision(out_dir: Path, repo: str, path: str) -> None:
    """A published CLIPVisionModelWithProjection config at toy width, its projection (the
    embedding other models read) at the published size."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = {k: v for k, v in published(repo, path).items() if not k.startswith("_") and k not in _NOT_CONFIG}
    cfg.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=TINY_SIDE,
               patch_size=8)
    CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg)).save_pretrained(out_dir)


def tiny_clip(out_dir: Path) -> None:
    """The "clip" role: the ViT-H image tower where unCLIP publishes it (image_encoder/), with
    OpenCLIP ViT-H's processor (feature_extractor/; unCLIP's own was not readable and its
    sibling stable-diffusion-2-1-unclip-small shows the same values, published/SOURCES.md)."""
    tiny_clip_vision(out_dir / "image_encoder", VIT_H, "models/image_encoder/config.json")
    tiny_feature_extractor(out_dir / "feature_extractor", processor_config("clip"), TINY_SIDE)


def tiny_zero123(out_dir: Path) -> None:
    """Zero-1-to-3 XL in zero123-xl-diffusers' layout: an 8-channel UNet on 32² latents of a
    four-level (f8) VAE, so 256² images as the model was trained (loaders.ZERO123_SIZE;
    Zero-1-to-3's sd-objaverse-finetune-c_concat-256.yaml: in_channels 8, image_size 32);
    the camera projection as published (768 + 4 -> 768); the ViT-L/14 tower with OpenAI
    CLIP-L's processor. Its UNet, VAE and scheduler files were not readable: they are SD's
    (Zero-1-to-3 is fine-tuned from it), with the yaml's changes."""
    from .zero123_parts import CLIPCameraProjection

    out_dir.mkdir(parents=True, exist_ok=True)
    projection = {k: v for k, v in published(ZERO123, "clip_camera_projection/config.json").items()
                  if not k.startswith("_")}
    embed = projection["embedding_dim"]
    tiny_unet(out_dir / "unet", cross_dim=embed, sample_size=32, in_channels=8)
    tiny_vae(out_dir / "vae", levels=4)
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                   num_attention_heads=4, image_size=TINY_SIDE, patch_size=8,
                                                   projection_dim=embed)).save_pretrained(out_dir / "image_encoder")
    tiny_scheduler(out_dir / "scheduler", SD15, _class_name="DDIMScheduler")
    tiny_feature_extractor(out_dir / "feature_extractor", processor_config("zero123"), TINY_SIDE)
    CLIPCameraProjection(**projection).save_pretrained(out_dir / "clip_camera_projection")
    _write_json(out_dir / "model_index.json", {
        "_class_name": "Zero123Pipeline", "_diffusers_version": "0.42.1",
        "clip_camera_projection": ["zero123", "CLIPCameraProjection"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]})


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
    embed_dim = published(VIT_H, "models/image_encoder/config.json")["projection_dim"]
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
    save_file(tensors, str(models / "ip-adapter_sd15.safetensors"))
    tiny_clip_vision(models / "image_encoder", VIT_H, "models/image_encoder/config.json")


def tiny_imagebind(out_dir: Path, out_dim: int = EMBED_DIM) -> None:
    """ImageBind checkpoint layout (imagebind_huge.pth + config.json) at toy width with the
    huge model's 1024-d embedding (unCLIP takes it as image_embeds), with the byte-level
    tokenizer in tokenizer/ (the files of openai/clip-vit-large-patch14, where the default
    role reads it)."""
    from transformers import CLIPTokenizer

    from .imagebind import CHECKPOINT, ImageBind, ImageBindConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    tiny_tokenizer(out_dir / "tokenizer", fast_file=True)
    vocab = len(CLIPTokenizer.from_pretrained(out_dir / "tokenizer"))
    cfg = ImageBindConfig(out_dim=out_dim, vision=(32, 2, 4), text=(32, 2, 4), audio=(32, 2, 4), depth=(16, 1, 4),
                          thermal=(16, 1, 4), imu=(16, 1, 4), vocab_size=vocab, image_size=28)
    torch.save(ImageBind(cfg).state_dict(), out_dir / CHECKPOINT)
    cfg.save(out_dir)


def _tiny_clip_parts(vocab_size: int) -> tuple[dict, dict]:
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab_size - 2,
                eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  image_size=TINY_SIDE, patch_size=8)
    return text, vision


def tiny_dino(out_dir: Path) -> None:
    """DINO ViT-B/16 (facebook/dino-vitb16: its published config and processor) at toy size."""
    from transformers import ViTConfig, ViTModel

    repo = "facebook/dino-vitb16"
    cfg = {k: v for k, v in published(repo, "config.json").items() if k not in _NOT_CONFIG}
    cfg.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
               image_size=TINY_SIDE, patch_size=8)
    ViTModel(ViTConfig(**cfg), add_pooling_layer=False).save_pretrained(out_dir)
    tiny_feature_extractor(out_dir, processor_config("dino"), TINY_SIDE)


def tiny_depth(out_dir: Path) -> None:
    """DPT-Hybrid (Intel/dpt-hybrid-midas: a BiT backbone under a ViT) at toy size, with
    DPTImageProcessor's defaults (384² in transformers; neither file of the repository was
    readable, published/SOURCES.md) scaled to its side."""
    from transformers import DPTConfig, DPTForDepthEstimation

    side = 2 * TINY_SIDE  # the BiT stem and its stages reduce 16x: 4x4 tokens
    bit = dict(global_padding="same", layer_type="bottleneck", depths=[1, 1, 1], embedding_size=8,
               hidden_sizes=[16, 32, 64], out_features=["stage1", "stage2", "stage3"],
               embedding_dynamic_padding=True, num_groups=4)
    cfg = DPTConfig(is_hybrid=True, backbone_config=bit, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=64, image_size=side, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                    neck_hidden_sizes=[16, 32, 32, 32], fusion_hidden_size=16,
                    backbone_featmap_shape=[1, 64, side // 16, side // 16], readout_type="project",
                    reassemble_factors=[1, 1, 1, 0.5])
    DPTForDepthEstimation(cfg).save_pretrained(out_dir)
    _write_json(out_dir / "preprocessor_config.json", {**processor_config("depth"),
                                                       "size": {"height": side, "width": side}})


def tiny_reward(out_dir: Path) -> None:
    """CLIP preference model (PickScore layout: CLIPModel) with its tokenizer in the folder
    and OpenCLIP ViT-H's processor (PickScore is fine-tuned from laion's CLIP-H; its own
    files were not readable)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    tiny_tokenizer(out_dir, fast_file=True)
    text, vision = _tiny_clip_parts(len(CLIPTokenizer.from_pretrained(out_dir)))
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(out_dir)
    tiny_feature_extractor(out_dir, processor_config("reward"), TINY_SIDE)


def tiny_segmenter(out_dir: Path) -> None:
    """CLIPSeg (CLIPSegForImageSegmentation) with its tokenizer in the folder, as published:
    weights as pytorch_model.bin, no tokenizer.json, its processor (352² for a 224² tower:
    the position embeddings are interpolated) scaled to the toy tower."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPTokenizer

    tiny_tokenizer(out_dir)
    text, vision = _tiny_clip_parts(len(CLIPTokenizer.from_pretrained(out_dir)))
    cfg = CLIPSegConfig(text_config=text, vision_config=vision, projection_dim=32, reduce_dim=16, extract_layers=[1, 2],
                        decoder_num_attention_heads=4, decoder_intermediate_size=32)
    model = CLIPSegForImageSegmentation(cfg)
    model.save_pretrained(out_dir)
    (out_dir / "model.safetensors").unlink()  # transformers 5 saves only safetensors; the repository has a pickle
    torch.save(model.state_dict(), out_dir / "pytorch_model.bin")
    # The published ratio of its processor's size to its tower's (352 / 224) kept.
    processor = processor_config("segmenter")
    tiny_feature_extractor(out_dir, processor, TINY_SIDE * processor["size"]["height"] // 224)


BUILDERS = {"imagebind": tiny_imagebind, "sd": tiny_stable_diffusion, "unclip": tiny_unclip, "clip": tiny_clip,
            "zero123": tiny_zero123, "ip_adapter": tiny_ip_adapter, "dino": tiny_dino, "depth": tiny_depth,
            "reward": tiny_reward, "segmenter": tiny_segmenter, "taesd": tiny_taesd}


def build_tiny(out_dir: str | Path, roles: list[str] | None = None, seed: int = 0) -> Path:
    """Write tiny models for the given roles (all by default) under out_dir/<role>."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    for role in roles or list(BUILDERS):
        BUILDERS[role](out / role)
    (out / "tiny.json").write_text(json.dumps({"version": TINY_VERSION, "roles": sorted(roles or BUILDERS)}))
    return out


def build_tiny_role(root: str | Path, role: str) -> Path:
    """root/<role> built in a folder of its own and moved into place whole: a build that is
    killed leaves no half folder that would look built, and processes building the same
    role at once (two backends, parallel tests) each get a complete one."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{role}-", dir=root))
    try:
        build_tiny(scratch, [role])
        try:
            (scratch / role).rename(root / role)
        except OSError:  # built meanwhile by another process
            if not (root / role).is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return root / role

