"""The loaders several roles share, and what every loader reads through. A loader (a role's
record names it: models/roles/, `Network.loader`) builds the role's frozen objects from
where the store says the role is, through the store's readers (ModelStore.read_parts /
read_model / read_tokenizer, which a store of random networks overrides). The store caches
what a loader returns and places it on the device; nothing here caches.

A loader: (store, key) -> a module, a components dataclass, or a tuple of them. The
preprocessing that turns them into functions of images is encoders.py's.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch

from ..errors import ModelNotAvailable
from .roles import cache_folder, default_id

# IP-Adapter for SD 1.5 in h94/IP-Adapter's models/ (its record's file groups name it too).
IP_ADAPTER_WEIGHTS = "ip-adapter_sd15.safetensors"


class ModelStore(Protocol):
    """What a loader reads through (store.ModelStore, or perf/networks.RandomStore, which
    builds random networks where the store would read files)."""

    device: torch.device
    dtype: torch.dtype
    allow_download: bool

    def location(self, role: str) -> str: ...
    def subfolder(self, role: str, where: str) -> str: ...
    def missing(self, role: str, where: str, exc: Exception) -> ModelNotAvailable: ...
    def read_parts(self, role: str, where: str, parts: dict[str, tuple[Any, str, bool]]) -> dict[str, Any]: ...
    def read_model(self, role: str, cls: Any, where: str | None = None, sub: str | None = None,
                   **kw: Any) -> Any: ...
    def compile(self, modules: dict[str, torch.nn.Module]) -> None: ...
    def graph(self, modules: dict[str, torch.nn.Module]) -> None: ...


@dataclass
class SDComponents:
    """A Stable Diffusion model split into what guidance needs."""

    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    alphas_cumprod: torch.Tensor  # [T]
    prediction_type: str
    image_normalizer: Any = None  # Stable unCLIP only
    image_noising_scheduler: Any = None


# Zero-1-to-3's input side: it was fine-tuned on 256² renders (cvlab-columbia/zero123,
# zero123/configs/sd-objaverse-finetune-c_concat-256.yaml: image_size 32 latents of an f8
# VAE), the size threestudio's and Magic123's guidance resize renders and x_r to.
ZERO123_SIZE = 256


@dataclass
class Zero123Components:
    """Its CLIP image tower is a role of its own, "zero123/image_encoder"."""

    unet: Any
    vae: Any
    cc_projection: Any
    alphas_cumprod: torch.Tensor
    device: torch.device
    resolution: int = ZERO123_SIZE  # the image side it takes (checked against its configs)


def load_sd(store: ModelStore, role: str) -> SDComponents:
    """Stable Diffusion ("sd") or Stable unCLIP ("unclip"), frozen, in eval mode."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    where = store.location(role)
    p = store.read_parts(role, where, {
        "tokenizer": (CLIPTokenizer, "tokenizer", False), "text_encoder": (CLIPTextModel, "text_encoder", True),
        "unet": (UNet2DConditionModel, "unet", True), "vae": (AutoencoderKL, "vae", True),
        "scheduler": (DDIMScheduler, "scheduler", False)})
    tokenizer, text_encoder, unet, vae, scheduler = (p[k] for k in ("tokenizer", "text_encoder", "unet", "vae",
                                                                    "scheduler"))
    if len(tokenizer) < 100:  # transformers can silently build an empty vocabulary
        raise ModelNotAvailable(role, where, f"tokenizer has only {len(tokenizer)} tokens: broken tokenizer files")
    normalizer = noising = None
    if unet.config.class_embed_type == "projection":  # Stable unCLIP
        from diffusers import DDPMScheduler
        from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer

        extra = store.read_parts(role, where, {
            "normalizer": (StableUnCLIPImageNormalizer, "image_normalizer", True),
            "noising": (DDPMScheduler, "image_noising_scheduler", False)})
        normalizer, noising = extra["normalizer"].to(store.device), extra["noising"]
    for m in (text_encoder, unet, vae):
        m.requires_grad_(False).eval().to(store.device)
    _checkpoint_blocks(vae)
    store.compile({f"{role}.unet": unet, f"{role}.vae.decoder": vae.decoder})
    store.graph({f"{role}.unet": unet, f"{role}.vae.encoder": vae})
    return SDComponents(tokenizer, text_encoder, unet, vae, scheduler.alphas_cumprod.float().clone(),
                        scheduler.config.prediction_type, normalizer, noising)


def load_zero123(store: ModelStore, role: str) -> Zero123Components:
    """Zero-1-to-3 (diffusers layout: ashawkey/zero123-xl-diffusers)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from .zero123_parts import CLIPCameraProjection

    where = store.location(role)
    p = store.read_parts(role, where, {
        "unet": (UNet2DConditionModel, "unet", True), "vae": (AutoencoderKL, "vae", True),
        "proj": (CLIPCameraProjection, "clip_camera_projection", True),
        "scheduler": (DDIMScheduler, "scheduler", False)})
    unet, vae, proj, scheduler = p["unet"], p["vae"], p["proj"], p["scheduler"]
    if unet.config.in_channels != 8:
        raise ModelNotAvailable(role, where, f"expected an 8-channel Zero-1-to-3 UNet, got {unet.config.in_channels}")
    side = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    if side != ZERO123_SIZE:
        raise ModelNotAvailable(role, where, f"its configs give {side}² images (unet sample_size "
                                f"{unet.config.sample_size} x the VAE's {side // unet.config.sample_size}), but "
                                f"Zero-1-to-3 was trained at {ZERO123_SIZE}²: a different or broken model")
    for m in (unet, vae, proj):
        m.requires_grad_(False).eval().to(store.device)
    _checkpoint_blocks(vae)
    store.compile({f"{role}.unet": unet})
    store.graph({f"{role}.unet": unet, f"{role}.vae.encoder": vae})
    return Zero123Components(unet, vae, proj, scheduler.alphas_cumprod.float().clone(), store.device)


def load_imagebind(store: ModelStore, role: str) -> tuple[Any, Any]:
    """ImageBind and its CLIP BPE tokenizer. The default folder is $CONJURE_CACHE/imagebind
    (~/.cache/conjure/imagebind)."""
    from transformers import CLIPTokenizer

    from .imagebind import CHECKPOINT, load_imagebind as build

    folder = cache_folder(store.location(role))
    try:
        model = build(folder, store.device)
    except FileNotFoundError as exc:
        raise ModelNotAvailable(role, str(folder / CHECKPOINT),
                                "download the official imagebind_huge.pth (ImageBind repository README) into "
                                "that folder, or point a models manifest's \"imagebind\" at its folder") from exc
    tok_where = str(folder / "tokenizer") if (folder / "tokenizer").exists() else default_id("imagebind_tokenizer")
    try:
        tokenizer = CLIPTokenizer.from_pretrained(tok_where, local_files_only=not store.allow_download
                                                  and not Path(tok_where).exists())
    except OSError as exc:
        raise store.missing("imagebind_tokenizer", tok_where, exc) from exc
    if len(tokenizer) != model.cfg.vocab_size:
        raise ModelNotAvailable(role, tok_where, f"tokenizer has {len(tokenizer)} tokens, the model "
                                f"{model.cfg.vocab_size}: wrong or broken tokenizer files")
    return model.to(store.dtype), tokenizer


def ip_adapter_weights(store: ModelStore, role: str = "ip_adapter") -> dict[str, dict[str, torch.Tensor]]:
    """IP-Adapter's weights ({"image_proj": ..., "ip_adapter": ...}, diffusers' layout for
    UNet2DConditionModel._load_ip_adapter_weights): read once into a UNet by
    encoders.ip_adapter, so not a cached role object (its image tower is,
    "ip_adapter/image_encoder")."""
    from safetensors.torch import load_file

    where = store.location(role)
    sub = store.subfolder(role, where)
    try:
        if Path(where).exists():
            path = str(Path(where) / sub / IP_ADAPTER_WEIGHTS)
        else:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(where, IP_ADAPTER_WEIGHTS, subfolder=sub, local_files_only=not store.allow_download)
        flat = load_file(path)
    except Exception as exc:  # noqa: BLE001 (hub and file errors come in many types)
        raise store.missing(role, where, exc) from exc
    nested: dict[str, dict] = {"image_proj": {}, "ip_adapter": {}}
    for k, v in flat.items():
        group, rest = k.split(".", 1)
        nested[group][rest] = v
    return nested


def image_tower(base: str, sub: str, store: ModelStore, role: str) -> Any:
    """A CLIP image tower inside another role's repository (Zero-1-to-3's, IP-Adapter's)."""
    from transformers import CLIPVisionModelWithProjection

    where = store.location(base)
    inner = store.subfolder(base, where)
    return store.read_model(role, CLIPVisionModelWithProjection, where, f"{inner}/{sub}".strip("/"))


def _checkpoint_blocks(vae: Any) -> None:
    """Encoding renders with gradient keeps only each block's input; backward recomputes the
    block (diffusers' checkpointing, active whenever grad is on, in eval mode too)."""
    from torch.utils.checkpoint import checkpoint

    vae.enable_gradient_checkpointing(partial(checkpoint, use_reentrant=False))
