"""A role's hub repository as published: its file list and the class each config names
(each role's record, models/roles/, holds its own Layout), and the repositories'
configuration files as vendored.

Each layout is taken from the repository's own pages (the address beside it: a file tree, a
commit's file list, or a copy's "duplicate from" commit where the original's tree was not
readable here). The tiny models (tiny.py and the role modules) are written in these layouts
and the test hub mirror serves them under these file names, so the download's file
selection and the loaders meet the real repositories' names, subfolders and config classes.
Weights that a layout lists but no loader reads (fp16 variants on a CPU, .bin beside
safetensors, .ckpt originals, cards) are served too, as the hub lists them.
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


@dataclass(frozen=True)
class Layout:
    """files: repository paths (posix); classes: config file -> the class it names
    (`_class_name` of a diffusers config, `architectures[0]` of a transformers one, the
    pipeline class of model_index.json, `tokenizer_class` of a tokenizer_config.json)."""

    repo: str
    listed_at: tuple[str, ...]
    files: tuple[str, ...]
    classes: dict[str, str] = field(default_factory=dict)


def variants(folder: str, stem: str, kinds: tuple[str, ...]) -> tuple[str, ...]:
    """A diffusers-style weights folder: `kinds` of ".safetensors", ".bin", ".fp16.safetensors",
    ".fp16.bin" for one stem, with the folder's config.json."""
    return (f"{folder}/config.json", *(f"{folder}/{stem}{k}" for k in kinds))


ALL_KINDS = (".safetensors", ".bin", ".fp16.safetensors", ".fp16.bin")
CLIP_BPE = ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")
