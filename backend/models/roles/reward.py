"""PickScore ("reward"): SGC's CLIP-based human-preference reward. Its tokenizer ships apart,
in LAION's CLIP-H repository ("reward_tokenizer")."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..catalog import PROCESSOR_FILES, HubFiles, card, transformers_files
from ..full_size import TEXT_H, VIT_H
from ..layouts import Layout
from ..loaders import ModelStore
from ..tiny import TINY_SIDE, tiny_clip_parts, tiny_feature_extractor, tiny_tokenizer
from . import MODEL, ModelRole, Network, Processor, register

REPO = "yuvalkirstain/PickScore_v1"

LAYOUT = Layout(
    REPO,
    ("https://huggingface.co/yuvalkirstain/PickScore_v1/tree/main",),
    ("README.md", "config.json", "merges.txt", "model.safetensors", "preprocessor_config.json", "pytorch_model.bin",
     "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"),
    {"config.json": "CLIPModel"},
)
# OpenCLIP ViT-H's processor (PickScore is fine-tuned from laion's CLIP-H; its own file was
# not readable, published/SOURCES.md).
PROCESSOR = Processor("preprocessor_config.json", ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "preprocessor_config.json"))


def tiny_reward(out_dir: Path) -> None:
    """CLIP preference model (PickScore layout: CLIPModel) with its tokenizer in the folder
    and its processor scaled to the toy tower."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    tiny_tokenizer(out_dir, fast_file=True)
    text, vision = tiny_clip_parts(len(CLIPTokenizer.from_pretrained(out_dir)))
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(out_dir)
    tiny_feature_extractor(out_dir, PROCESSOR.published_config(), TINY_SIDE)


def load_reward(store: ModelStore, role: str) -> Any:
    from transformers import CLIPModel

    return store.read_model(role, CLIPModel)


def full_size() -> Any:
    """OpenCLIP ViT-H/14 (its text tower's 24 layers)."""
    from transformers import CLIPConfig, CLIPModel

    return CLIPModel(CLIPConfig(text_config={**TEXT_H, "num_hidden_layers": 24}, vision_config=VIT_H,
                                projection_dim=1024))


register(ModelRole(
    "reward", order=10, sources=(REPO,), files=HubFiles((*transformers_files(), PROCESSOR_FILES)),
    licence=card(REPO, "PickScore (model card)"), layout=LAYOUT, tiny=tiny_reward, companions=("reward_tokenizer",),
    network=Network(load_reward, {MODEL: full_size}, conditioning=(), processor=PROCESSOR),
))
