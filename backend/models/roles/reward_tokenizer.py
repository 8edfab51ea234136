"""The reward's text tokenizer ("reward_tokenizer"): PickScore's README loads its processor
from LAION's CLIP-ViT-H-14 repository, apart from its weights. Read by encoders.reward; its
tiny files are the tiny reward's."""
from __future__ import annotations

from ..catalog import MIT, TOKENIZER_FILES, HubFiles, card
from ..layouts import Layout
from . import ModelRole, register

REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"

LAYOUT = Layout(
    REPO,
    ("https://huggingface.co/hoaiht/CLIP-ViT-H-14-laion2B-s32B-b79K/commits/15485f63545ef3e71194832e1860e4f922be67fb"
     " (a copy's upload of the repository, file by file)",),
    ("README.md", "config.json", "open_clip_pytorch_model.bin", "preprocessor_config.json", "pytorch_model.bin",
     "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"),
    {"config.json": "CLIPModel"},
)

register(ModelRole(
    "reward_tokenizer", order=11, sources=(REPO,), files=HubFiles((TOKENIZER_FILES,)), licence=card(REPO, MIT),
    layout=LAYOUT, tiny=None, network=None,
))
