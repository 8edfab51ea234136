"""CLIPSeg ("segmenter"): text-prompted foreground masks for reference images without alpha;
runs once to condition."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..catalog import APACHE, PROCESSOR_FILES, TOKENIZER_FILES, HubFiles, card, transformers_files
from ..layouts import CLIP_BPE, Layout
from ..loaders import ModelStore
from ..tiny import TINY_SIDE, tiny_clip_parts, tiny_feature_extractor, tiny_tokenizer
from . import ModelRole, Network, Processor, register

REPO = "CIDAS/clipseg-rd64-refined"

# The tokenizer as vocab.json + merges.txt only: no tokenizer.json in the repository.
LAYOUT = Layout(
    REPO,
    ("https://huggingface.co/CIDAS/clipseg-rd64-refined/tree/583b388deb98a04feb3e1f816dcdb8f3062ee205",
     "https://huggingface.co/CIDAS/clipseg-rd64-refined/tree/refs%2Fpr%2F6 (+ model.safetensors)"),
    ("README.md", "config.json", "preprocessor_config.json", "pytorch_model.bin", *CLIP_BPE),
    {"config.json": "CLIPSegForImageSegmentation"},
)
PROCESSOR = Processor("preprocessor_config.json", (REPO, "preprocessor_config.json"))


def tiny_segmenter(out_dir: Path) -> None:
    """CLIPSeg (CLIPSegForImageSegmentation) with its tokenizer in the folder, as published:
    weights as pytorch_model.bin, no tokenizer.json, its processor (352² for a 224² tower:
    the position embeddings are interpolated) scaled to the toy tower."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPTokenizer

    tiny_tokenizer(out_dir)
    text, vision = tiny_clip_parts(len(CLIPTokenizer.from_pretrained(out_dir)))
    cfg = CLIPSegConfig(text_config=text, vision_config=vision, projection_dim=32, reduce_dim=16, extract_layers=[1, 2],
                        decoder_num_attention_heads=4, decoder_intermediate_size=32)
    model = CLIPSegForImageSegmentation(cfg)
    model.save_pretrained(out_dir)
    (out_dir / "model.safetensors").unlink()  # transformers 5 saves only safetensors; the repository has a pickle
    torch.save(model.state_dict(), out_dir / "pytorch_model.bin")
    # The published ratio of its processor's size to its tower's (352 / 224) kept.
    processor = PROCESSOR.published_config()
    tiny_feature_extractor(out_dir, processor, TINY_SIDE * processor["size"]["height"] // 224)


def load_segmenter(store: ModelStore, role: str) -> Any:
    from transformers import CLIPSegForImageSegmentation

    return store.read_model(role, CLIPSegForImageSegmentation)


register(ModelRole(
    "segmenter", order=12, sources=(REPO,),
    files=HubFiles((*transformers_files(), TOKENIZER_FILES, PROCESSOR_FILES)), licence=card(REPO, APACHE),
    layout=LAYOUT, tiny=tiny_segmenter,
    # bench and the estimator build none: their inputs carry alpha, nothing is segmented.
    network=Network(load_segmenter, None, conditioning="all", processor=PROCESSOR),
))
