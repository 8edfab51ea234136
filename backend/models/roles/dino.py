"""DINO ViT-B/16 ("dino"): SGC's semantic features (the global CLS feature of renders)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..catalog import APACHE, PROCESSOR_FILES, HubFiles, card, transformers_files
from ..layouts import Layout, published
from ..loaders import ModelStore
from ..tiny import NOT_CONFIG, TINY_SIDE, tiny_feature_extractor
from . import MODEL, ModelRole, Network, Processor, register

REPO = "facebook/dino-vitb16"

LAYOUT = Layout(
    REPO,
    ("https://huggingface.co/facebook/dino-vitb16/tree/5d8edb1c2c6bc8f42bd159f8b53dad38f7f9a387",
     "https://huggingface.co/facebook/dino-vitb16/tree/refs%2Fpr%2F7"),
    ("README.md", "config.json", "model.safetensors", "preprocessor_config.json", "pytorch_model.bin",
     "tf_model.h5"),
    {"config.json": "ViTModel"},
)
PROCESSOR = Processor("preprocessor_config.json", (REPO, "preprocessor_config.json"))


def tiny_dino(out_dir: Path) -> None:
    """DINO ViT-B/16 (its published config and processor) at toy size."""
    from transformers import ViTConfig, ViTModel

    cfg = {k: v for k, v in published(REPO, "config.json").items() if k not in NOT_CONFIG}
    cfg.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
               image_size=TINY_SIDE, patch_size=8)
    ViTModel(ViTConfig(**cfg), add_pooling_layer=False).save_pretrained(out_dir)
    tiny_feature_extractor(out_dir, PROCESSOR.published_config(), TINY_SIDE)


def load_dino(store: ModelStore, role: str) -> Any:
    from transformers import ViTModel

    return store.read_model(role, ViTModel, add_pooling_layer=False)


def full_size() -> Any:
    from transformers import ViTConfig, ViTModel

    return ViTModel(ViTConfig(image_size=224, patch_size=16), add_pooling_layer=False)  # ViT-B/16: the defaults


register(ModelRole(
    "dino", order=8, sources=(REPO,), files=HubFiles((*transformers_files(), PROCESSOR_FILES)),
    licence=card(REPO, APACHE), layout=LAYOUT, tiny=tiny_dino,
    network=Network(load_dino, {MODEL: full_size}, conditioning=(), processor=PROCESSOR),
))
