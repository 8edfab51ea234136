"""Where each model role's weights come from, which of their files the loaders read, and
under which licence: the data `models status` and `models download` work from.

A hub role lists groups of file globs (relative to its repository); a download fetches the
files matching any glob, a cached copy is complete when every group matches at least one
file. Within one folder only one weights file is fetched: safetensors before a pickle, and
on a CUDA machine the fp16 variant first where the repository has one (variants.py: the
store computes in fp16 there, so the float32 file would be twice the bytes for nothing).
Other variants (`*.non_ema.*`, `*.fp16_ema.*`) and originals (`*.ckpt`) are never fetched.
Each role's repository layout as published is in layouts.py. ImageBind is not on the hub:
one checkpoint from its official address.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import PurePosixPath

from .roles import DEFAULT_IDS, IP_ADAPTER_WEIGHTS, REWARD_TOKENIZER
from .variants import choose, weight_kind

IMAGEBIND_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
# Upstream publishes no checksum for imagebind_huge.pth; with none pinned here the download
# records the SHA-256 it computed beside the file (imagebind_huge.pth.sha256) and the
# environment variable CONJURE_IMAGEBIND_SHA256 pins one to check against.
IMAGEBIND_SHA256: str | None = None


@dataclass(frozen=True)
class Licence:
    name: str
    url: str


@dataclass(frozen=True)
class HubSource:
    """A role's files in a hub repository: groups of alternative globs, each group needed.
    `repo` is the first of the role's sources (roles.HUB_SOURCES, tried in order)."""

    repo: str
    groups: tuple[tuple[str, ...], ...]
    licence: Licence

    def wants(self, path: str) -> bool:
        return any(fnmatch.fnmatch(path, g) for group in self.groups for g in group)


@dataclass(frozen=True)
class URLSource:
    url: str
    filename: str
    licence: Licence


def _weights(folder: str, stem: str, pickle_stem: str | None = None) -> tuple[str, ...]:
    """A weights file and its fp16 variant, as safetensors or a pickle (transformers names
    its pickle pytorch_model.bin beside model.safetensors)."""
    prefix = f"{folder}/" if folder else ""
    pickle = pickle_stem or stem
    return (f"{prefix}{stem}.safetensors", f"{prefix}{pickle}.bin", f"{prefix}{stem}.fp16.safetensors",
            f"{prefix}{pickle}.fp16.bin")


def _diffusers(folder: str) -> tuple[tuple[str, ...], ...]:
    return ((f"{folder}/config.json",), _weights(folder, "diffusion_pytorch_model"))


def _transformers(folder: str = "") -> tuple[tuple[str, ...], ...]:
    prefix = f"{folder}/" if folder else ""
    return ((f"{prefix}config.json",), _weights(folder, "model", "pytorch_model"))


_TOKENIZER = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# An image role's processor configuration (roles.PREPROCESSOR_CONFIGS): how its images are prepared.
_PROCESSOR = ("preprocessor_config.json",)
_SD = (("model_index.json",), ("scheduler/scheduler_config.json",), ("tokenizer/*",),
       *_transformers("text_encoder"), *_diffusers("unet"), *_diffusers("vae"))
_OPENRAIL = Licence("CreativeML OpenRAIL-M",
                    "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/blob/main/LICENSE.md")
# The licence travels with the community copy (a copy of the removed original, its card and
# LICENSE.md included).
_OPENRAIL_PP = Licence("CreativeML OpenRAIL++-M",
                       f"https://huggingface.co/{DEFAULT_IDS['unclip']}/blob/main/LICENSE.md")
_APACHE = "Apache-2.0"
_MIT = "MIT"


def _card(repo: str, name: str) -> Licence:
    return Licence(name, f"https://huggingface.co/{repo}")


SOURCES: dict[str, HubSource | URLSource] = {
    "sd": HubSource(DEFAULT_IDS["sd"], _SD, _OPENRAIL),
    "unclip": HubSource(DEFAULT_IDS["unclip"], _SD + (*_diffusers("image_normalizer"),
                                                      ("image_noising_scheduler/scheduler_config.json",)),
                        _OPENRAIL_PP),
    "clip": HubSource(DEFAULT_IDS["clip"], (*_transformers("image_encoder"), ("feature_extractor/preprocessor_config.json",)),
                      _OPENRAIL_PP),
    "zero123": HubSource(DEFAULT_IDS["zero123"], (("model_index.json",), ("scheduler/scheduler_config.json",),
                                                  *_diffusers("unet"), *_diffusers("vae"),
                                                  *_diffusers("clip_camera_projection"), *_transformers("image_encoder"),
                                                  ("feature_extractor/preprocessor_config.json",)),
                         _card(DEFAULT_IDS["zero123"], f"{_MIT} (Zero-1-to-3 XL; model card)")),
    "ip_adapter": HubSource(DEFAULT_IDS["ip_adapter"], ((f"models/{IP_ADAPTER_WEIGHTS}",),
                                                        *_transformers("models/image_encoder")),
                            _card(DEFAULT_IDS["ip_adapter"], _APACHE)),
    "imagebind": URLSource(IMAGEBIND_URL, "imagebind_huge.pth",
                           Licence("CC-BY-NC 4.0 (non-commercial use only)",
                                   "https://github.com/facebookresearch/ImageBind/blob/main/LICENSE")),
    "imagebind_tokenizer": HubSource(DEFAULT_IDS["imagebind_tokenizer"], (_TOKENIZER,),
                                     _card(DEFAULT_IDS["imagebind_tokenizer"], f"{_MIT} (OpenAI CLIP)")),
    "dino": HubSource(DEFAULT_IDS["dino"], (*_transformers(), _PROCESSOR), _card(DEFAULT_IDS["dino"], _APACHE)),
    "depth": HubSource(DEFAULT_IDS["depth"], (*_transformers(), _PROCESSOR), _card(DEFAULT_IDS["depth"], _APACHE)),
    "reward": HubSource(DEFAULT_IDS["reward"], (*_transformers(), _PROCESSOR),
                        _card(DEFAULT_IDS["reward"], "PickScore (model card)")),
    "reward_tokenizer": HubSource(REWARD_TOKENIZER, (_TOKENIZER,), _card(REWARD_TOKENIZER, _MIT)),
    "segmenter": HubSource(DEFAULT_IDS["segmenter"], (*_transformers(), _TOKENIZER, _PROCESSOR),
                           _card(DEFAULT_IDS["segmenter"], _APACHE)),
    "taesd": HubSource(DEFAULT_IDS["taesd"], (("config.json",), _weights("", "diffusion_pytorch_model")),
                       _card(DEFAULT_IDS["taesd"], _MIT)),
}
# Roles that load a second source of their own (tokenizers shipped apart from the weights).
COMPANIONS = {"imagebind": ("imagebind_tokenizer",), "reward": ("reward_tokenizer",)}


def with_companions(roles: set[str] | list[str]) -> list[str]:
    """The roles and the sources they also read, in catalog order."""
    wanted = set(roles) | {c for r in roles for c in COMPANIONS.get(r, ())}
    unknown = sorted(wanted - set(SOURCES))
    if unknown:
        raise KeyError(f"unknown model role {unknown[0]!r}; known: {', '.join(SOURCES)}")
    return [r for r in SOURCES if r in wanted]


def select_files(source: HubSource, files: list[str], half: bool = False) -> list[str]:
    """The repository files (posix paths) the loaders of a role read: in each folder one
    kind of weights (variants.choose; half: the store will compute in fp16)."""
    chosen = [f for f in files if source.wants(f)]
    kinds: dict[str, set[str]] = {}
    for f in chosen:
        if weight_kind(f):
            kinds.setdefault(str(PurePosixPath(f).parent), set()).add(weight_kind(f))
    best = {folder: choose(found, half) for folder, found in kinds.items()}
    return sorted(f for f in chosen if weight_kind(f) in (None, best.get(str(PurePosixPath(f).parent))))


def missing_groups(source: HubSource, files: list[str]) -> list[str]:
    """The groups (first glob of each) no file matches: [] when a copy is complete."""
    return [group[0] for group in source.groups if not any(fnmatch.fnmatch(f, g) for f in files for g in group)]


def imagebind_sha256() -> str | None:
    return os.environ.get("CONJURE_IMAGEBIND_SHA256", IMAGEBIND_SHA256)
