"""Model roles as data: the hub ids each role is read from (in order), the subfolders and
file names inside them, and where the Conjure cache is. A leaf: the catalog, the download
and the store (store.py) build on it; it imports nothing of theirs."""
from __future__ import annotations

import os
from pathlib import Path

# Stability AI removed its whole stable-diffusion-2-* family from the hub around 2025-11-13;
# projects moved to the community copies under sd2-community (huggingface/optimum-habana
# PR 2363, Nerogar/OneTrainer issue 1129, CompVis/cleandift issue 17). The old id stays as a
# second source: a machine that downloaded it before still holds it in its cache.
_UNCLIP = ("sd2-community/stable-diffusion-2-1-unclip", "stabilityai/stable-diffusion-2-1-unclip")
# Role -> hub ids to try, in order (the first is the default). The tiny builders write each
# role under <dir>/<role>.
HUB_SOURCES: dict[str, tuple[str, ...]] = {
    "sd": ("stable-diffusion-v1-5/stable-diffusion-v1-5",),
    "unclip": _UNCLIP,
    # OpenCLIP ViT-H image tower, as shipped (transformers format) inside Stable unCLIP.
    "clip": _UNCLIP,
}
DEFAULT_IDS = {
    "sd": HUB_SOURCES["sd"][0],
    "unclip": HUB_SOURCES["unclip"][0],
    "clip": HUB_SOURCES["clip"][0],
    "zero123": "ashawkey/zero123-xl-diffusers",
    "ip_adapter": "h94/IP-Adapter",
    # Not on the hub: a folder holding the official imagebind_huge.pth (see imagebind_dir()).
    "imagebind": "imagebind",
    # ImageBind's text BPE is OpenAI CLIP's.
    "imagebind_tokenizer": "openai/clip-vit-large-patch14",
    # SGC: DINO ViT features, monocular depth (relative inverse depth), preference reward.
    "dino": "facebook/dino-vitb16",
    "depth": "Intel/dpt-hybrid-midas",
    "reward": "yuvalkirstain/PickScore_v1",
    # The reward's tokenizer ships apart from PickScore's weights.
    "reward_tokenizer": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
    # Text-prompted foreground masks for reference images without alpha (CLIPSeg).
    "segmenter": "CIDAS/clipseg-rd64-refined",
    # Tiny decoder of SD 1.x/2.x latents (TAESD): the HiFA image target of aug_sds.
    "taesd": "madebyollin/taesd",
}
REWARD_TOKENIZER = DEFAULT_IDS["reward_tokenizer"]
for _role, _id in DEFAULT_IDS.items():
    HUB_SOURCES.setdefault(_role, (_id,))
IP_ADAPTER_WEIGHTS = "ip-adapter_sd15.safetensors"
# Roles whose weights sit in a subfolder of their repository (layouts.py); a local folder
# without that subfolder holds them at its root.
DEFAULT_SUBFOLDERS = {"clip": "image_encoder", "ip_adapter": "models"}
# Image roles -> (the role whose repository holds it, its image processor's config there),
# as the repositories publish them; a local folder holding a role at its root holds the
# file there. None: the repository publishes none and every pipeline builds the processor's
# defaults at the tower's image_size (diffusers loaders/ip_adapter.py load_ip_adapter:
# CLIPImageProcessor(size=clip_image_size, crop_size=clip_image_size); IP-Adapter's own
# ip_adapter.py: CLIPImageProcessor()).
PREPROCESSOR_CONFIGS: dict[str, tuple[str, str | None]] = {
    "clip": ("clip", "feature_extractor/preprocessor_config.json"),
    "zero123/image_encoder": ("zero123", "feature_extractor/preprocessor_config.json"),
    "ip_adapter/image_encoder": ("ip_adapter", None),
    "dino": ("dino", "preprocessor_config.json"),
    "depth": ("depth", "preprocessor_config.json"),
    "reward": ("reward", "preprocessor_config.json"),
    "segmenter": ("segmenter", "preprocessor_config.json"),
}


def point_elsewhere(role: str) -> str:
    """How a user points a role at another repository or a folder."""
    return (f"or point {role!r} elsewhere with a models manifest (the job's \"models\": a JSON file "
            f"{{\"{role}\": \"owner/name or /a/folder\"}}; the add-on preferences' Models field takes the same file)")


def conjure_cache() -> Path:
    """$CONJURE_CACHE (~/.cache/conjure): tiny models, ImageBind's folder, accepted licences."""
    return Path(os.environ.get("CONJURE_CACHE", Path.home() / ".cache" / "conjure"))


def imagebind_dir(where: str) -> Path:
    """An "imagebind" location as a folder: a path as given, else a name under the Conjure
    cache (the default, "imagebind": $CONJURE_CACHE/imagebind)."""
    return Path(where) if Path(where).is_absolute() or Path(where).exists() else conjure_cache() / where
