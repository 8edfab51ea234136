"""The files a model role's loaders read, and under which licence: the types and helpers
each role's record (models/roles/) states its files with, and the selection `models
status` and `models download` work from.

A hub role lists groups of file globs (relative to its repository); a download fetches the
files matching any glob, a cached copy is complete when every group matches at least one
file. Within one folder only one weights file is fetched: safetensors before a pickle, and
on a CUDA machine the fp16 variant first where the repository has one (variants.py: the
store computes in fp16 there, so the float32 file would be twice the bytes for nothing).
Other variants (`*.non_ema.*`, `*.fp16_ema.*`) and originals (`*.ckpt`) are never fetched.
A role not on the hub (ImageBind) is one file from its official address.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import PurePosixPath

from .variants import choose, weight_kind


@dataclass(frozen=True)
class Licence:
    name: str
    url: str


@dataclass(frozen=True)
class HubFiles:
    """A role's files in its hub repository: groups of alternative globs, each group needed."""

    groups: tuple[tuple[str, ...], ...]

    def wants(self, path: str) -> bool:
        return any(fnmatch.fnmatch(path, g) for group in self.groups for g in group)


@dataclass(frozen=True)
class URLFile:
    """A role's one file at an address. The environment variables <env>_URL and
    <env>_SHA256 point the download elsewhere and pin a checksum; with none pinned (here or
    there) the download records the SHA-256 it computed beside the file."""

    url: str
    filename: str
    env: str
    sha256: str | None = None

    def address(self) -> str:
        return os.environ.get(f"{self.env}_URL", self.url)

    def checksum(self) -> str | None:
        return os.environ.get(f"{self.env}_SHA256", self.sha256)


def weights_files(folder: str, stem: str, pickle_stem: str | None = None) -> tuple[str, ...]:
    """A weights file and its fp16 variant, as safetensors or a pickle (transformers names
    its pickle pytorch_model.bin beside model.safetensors)."""
    prefix = f"{folder}/" if folder else ""
    pickle = pickle_stem or stem
    return (f"{prefix}{stem}.safetensors", f"{prefix}{pickle}.bin", f"{prefix}{stem}.fp16.safetensors",
            f"{prefix}{pickle}.fp16.bin")


def diffusers_files(folder: str) -> tuple[tuple[str, ...], ...]:
    """A diffusers model folder: its config and weights."""
    return ((f"{folder}/config.json",), weights_files(folder, "diffusion_pytorch_model"))


def transformers_files(folder: str = "") -> tuple[tuple[str, ...], ...]:
    """A transformers model (in a folder or at the repository's root): its config and weights."""
    prefix = f"{folder}/" if folder else ""
    return ((f"{prefix}config.json",), weights_files(folder, "model", "pytorch_model"))


TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# An image network's processor configuration (roles.Processor): how its images are prepared.
PROCESSOR_FILES = ("preprocessor_config.json",)
APACHE = "Apache-2.0"
MIT = "MIT"


def card(repo: str, name: str) -> Licence:
    """A licence as the repository's model card states it."""
    return Licence(name, f"https://huggingface.co/{repo}")


def select_files(source: HubFiles, files: list[str], half: bool = False) -> list[str]:
    """The repository files (posix paths) the loaders of a role read: in each folder one
    kind of weights (variants.choose; half: the store will compute in fp16)."""
    chosen = [f for f in files if source.wants(f)]
    kinds: dict[str, set[str]] = {}
    for f in chosen:
        if weight_kind(f):
            kinds.setdefault(str(PurePosixPath(f).parent), set()).add(weight_kind(f))
    best = {folder: choose(found, half) for folder, found in kinds.items()}
    return sorted(f for f in chosen if weight_kind(f) in (None, best.get(str(PurePosixPath(f).parent))))


def missing_groups(source: HubFiles, files: list[str]) -> list[str]:
    """The groups (first glob of each) no file matches: [] when a copy is complete."""
    return [group[0] for group in source.groups if not any(fnmatch.fnmatch(f, g) for f in files for g in group)]
