"""A model role of the tests' own, in one module as a new role's module in
backend/models/roles/ is: importing it registers the record (its hub source, files, licence,
published layout, loader, tiny builder, full-size builder, processor and what only
conditions), and nothing else in the backend names it. tests/test_model_roles.py imports it
and sees the store, the catalog, the download, the tiny builds and the estimator's random
networks pick it up."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.models.catalog import MIT, PROCESSOR_FILES, HubFiles, card, transformers_files
from backend.models.layouts import Layout
from backend.models.roles import MODEL, ModelRole, Network, Processor, register
from backend.models.tiny import tiny_feature_extractor

REPO = "conjure-tests/toy-vit"
LAYOUT = Layout(REPO, ("https://huggingface.co/conjure-tests/toy-vit (a repository of the tests' own)",),
                ("README.md", "config.json", "model.safetensors", "pytorch_model.bin", "preprocessor_config.json"),
                {"config.json": "ViTModel"})
# ViTImageProcessor's defaults (224² bilinear, mean and std 0.5).
PROCESSOR = Processor("preprocessor_config.json",
                      {"image_processor_type": "ViTImageProcessor", "size": {"height": 224, "width": 224}})
SIZES = dict(num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, patch_size=8)


def tiny_toy(out_dir: Path) -> None:
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=16, image_size=16, **SIZES), add_pooling_layer=False).save_pretrained(out_dir)
    tiny_feature_extractor(out_dir, PROCESSOR.published_config(), 16)


def load_toy(store: Any, role: str) -> Any:
    from transformers import ViTModel

    return store.read_model(role, ViTModel, add_pooling_layer=False)


def full_size_toy() -> Any:
    from transformers import ViTConfig, ViTModel

    return ViTModel(ViTConfig(hidden_size=64, image_size=224, **SIZES), add_pooling_layer=False)


register(ModelRole(
    "toy", order=1000, sources=(REPO,), files=HubFiles((*transformers_files(), PROCESSOR_FILES)),
    licence=card(REPO, MIT), layout=LAYOUT, tiny=tiny_toy,
    network=Network(load_toy, {MODEL: full_size_toy}, conditioning="all", processor=PROCESSOR),
))
