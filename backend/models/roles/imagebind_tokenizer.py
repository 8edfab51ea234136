"""ImageBind's text tokenizer ("imagebind_tokenizer"): OpenAI CLIP's BPE, shipped apart from
the checkpoint (ImageBind's own bpe_simple_vocab_16e6 is the same vocabulary). Read by the
imagebind role's loader; its tiny files are the tiny ImageBind's tokenizer/."""
from __future__ import annotations

from ..catalog import MIT, TOKENIZER_FILES, HubFiles, card
from ..layouts import CLIP_BPE, Layout
from . import ModelRole, register

REPO = "openai/clip-vit-large-patch14"

LAYOUT = Layout(
    REPO,
    ("https://huggingface.co/evilsocket/clip-vit-large-patch14/blob/main/vocab.json (Duplicated from "
     "openai/clip-vit-large-patch14)",),
    ("README.md", "config.json", "flax_model.msgpack", "model.safetensors", "preprocessor_config.json",
     "pytorch_model.bin", "tf_model.h5", "tokenizer.json", *CLIP_BPE),
    {"config.json": "CLIPModel", "tokenizer_config.json": "CLIPTokenizer"},
)

register(ModelRole(
    "imagebind_tokenizer", order=2, sources=(REPO,), files=HubFiles((TOKENIZER_FILES,)),
    licence=card(REPO, f"{MIT} (OpenAI CLIP)"), layout=LAYOUT, tiny=None, network=None,
))
