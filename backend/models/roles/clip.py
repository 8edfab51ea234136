"""The "clip" role: OpenCLIP ViT-H/14's image tower as Stable unCLIP ships it (its
image_encoder/, transformers format): the MS loss's image embeddings."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from ..catalog import HubFiles, transformers_files
from ..full_size import VIT_H, clip_vision
from ..loaders import ModelStore
from ..tiny import TINY_SIDE, VIT_H as VIT_H_REPO, tiny_clip_vision, tiny_feature_extractor
from . import MODEL, ModelRole, Network, register
from .unclip import LAYOUT, LICENCE, PROCESSOR, SOURCES


def tiny_clip(out_dir: Path) -> None:
    """The ViT-H image tower where unCLIP publishes it (image_encoder/), with its processor
    (feature_extractor/, unclip.PROCESSOR)."""
    tiny_clip_vision(out_dir / "image_encoder", VIT_H_REPO, "models/image_encoder/config.json")
    tiny_feature_extractor(out_dir / "feature_extractor", PROCESSOR.published_config(), TINY_SIDE)


def load_clip(store: ModelStore, role: str) -> Any:
    from transformers import CLIPVisionModelWithProjection

    model = store.read_model(role, CLIPVisionModelWithProjection)
    store.graph({role: model})
    return model


register(ModelRole(
    "clip", order=5, sources=SOURCES,
    files=HubFiles((*transformers_files("image_encoder"), ("feature_extractor/preprocessor_config.json",))),
    licence=LICENCE, layout=LAYOUT, tiny=tiny_clip, subfolder="image_encoder",
    network=Network(load_clip, {MODEL: partial(clip_vision, VIT_H)}, conditioning=(), processor=PROCESSOR),
))
