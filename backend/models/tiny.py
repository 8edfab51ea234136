"""Randomly initialised miniature models saved in the real on-disk formats, so tests (and
`models: "tiny"` jobs) run the real loading code with no download.

`build_tiny(out_dir)` writes one folder per role, <out_dir>/<role>, with each role's tiny
builder (its record's `tiny`, models/roles/; the store reads each with its real loader).
Each folder has the layout of the role's hub repository as published (its record's
layout): the same subfolders, file names and config classes, so a tiny folder served under
the real id is what a download of the real one gives. The builders several roles share are
here.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from .layouts import published
from .roles import registered, role as find_role

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


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


# The published repositories whose vendored configs the shared builders scale down (layouts.py).
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
VIT_H = "h94/IP-Adapter"  # models/image_encoder: OpenCLIP ViT-H/14, the tower unCLIP and IP-Adapter share
# Sizes of the miniatures: every width and depth shrinks; what crosses a model boundary keeps
# its published size (the 1024-d image embeddings C_m, unCLIP's 2048-d class labels, the
# 768-d Zero-1-to-3 conditioning), and so do classes, schedules, prediction types and
# processors' filters and statistics. Images: 32² for the Stable Diffusions (two VAE levels),
# 256² for Zero-1-to-3, whose input side is checked (loaders.ZERO123_SIZE).
TINY_SIDE = 32
# Keys of a transformers config.json that are not the config class's arguments.
NOT_CONFIG = ("architectures", "model_type", "transformers_version", "torch_dtype")
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
    """An image processor config (roles.Processor.published_config) scaled to its tower's side, as
    out_dir/preprocessor_config.json."""
    write_json(out_dir / "preprocessor_config.json", _scaled_processor(config, side))


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


def tiny_scheduler(out_dir: Path, repo: str = SD15, **changes: object) -> None:
    """A published scheduler_config.json as published (class, betas, prediction type)."""
    write_json(out_dir / "scheduler_config.json", {**published(repo, "scheduler/scheduler_config.json"), **changes})


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
    write_json(out_dir / "model_index.json", published(repo, "model_index.json"))


def tiny_clip_vision(out_dir: Path, repo: str, path: str) -> None:
    """A published CLIPVisionModelWithProjection config at toy width, its projection (the
    embedding other models read) at the published size."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = {k: v for k, v in published(repo, path).items() if not k.startswith("_") and k not in NOT_CONFIG}
    cfg.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=TINY_SIDE,
               patch_size=8)
    CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg)).save_pretrained(out_dir)


def tiny_clip_parts(vocab_size: int) -> tuple[dict, dict]:
    """A toy CLIP's text and vision configs (CLIPModel, CLIPSeg) on the tiny vocabulary."""
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab_size - 2,
                eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  image_size=TINY_SIDE, patch_size=8)
    return text, vision


def build_tiny(out_dir: str | Path, roles: list[str] | None = None, seed: int = 0) -> Path:
    """Write tiny models for the given roles (every role with a tiny builder by default, in
    the roles' order: torch is seeded once, so the order fixes the bytes) under out_dir/<role>."""
    names = [r.name for r in registered() if r.tiny] if roles is None else list(roles)
    builders = [(name, find_role(name).tiny) for name in names]
    missing = [name for name, build in builders if build is None]
    if missing:
        raise KeyError(f"{missing[0]!r} has no tiny build of its own (its files are another role's)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # the process's generator left as it was (a server builds these)
        torch.manual_seed(seed)
        for name, build in builders:
            build(out / name)
    (out / "tiny.json").write_text(json.dumps({"version": TINY_VERSION, "roles": sorted(names)}))
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

