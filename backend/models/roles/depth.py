"""DPT-Hybrid MiDaS ("depth"): monocular relative inverse depth of SGC's conditioning
images; runs once to condition."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..catalog import APACHE, PROCESSOR_FILES, HubFiles, card, transformers_files
from ..layouts import Layout
from ..loaders import ModelStore
from ..tiny import TINY_SIDE, write_json
from . import MODEL, ModelRole, Network, Processor, register

REPO = "Intel/dpt-hybrid-midas"

LAYOUT = Layout(
    REPO,
    ("https://huggingface.co/Intel/dpt-hybrid-midas/tree/refs%2Fpr%2F5 (main's files plus the safetensors "
     "conversion; main may hold only pytorch_model.bin, which the catalog accepts)",),
    ("README.md", "config.json", "model.safetensors", "preprocessor_config.json", "pytorch_model.bin"),
    {"config.json": "DPTForDepthEstimation"},
)
# Neither file of the repository was readable (published/SOURCES.md): its processor class's
# defaults (384² in transformers) stand in.
PROCESSOR = Processor("preprocessor_config.json", {"image_processor_type": "DPTImageProcessor"})


def tiny_depth(out_dir: Path) -> None:
    """DPT-Hybrid (a BiT backbone under a ViT) at toy size, with DPTImageProcessor's defaults
    scaled to its side."""
    from transformers import DPTConfig, DPTForDepthEstimation

    side = 2 * TINY_SIDE  # the BiT stem and its stages reduce 16x: 4x4 tokens
    bit = dict(global_padding="same", layer_type="bottleneck", depths=[1, 1, 1], embedding_size=8,
               hidden_sizes=[16, 32, 64], out_features=["stage1", "stage2", "stage3"],
               embedding_dynamic_padding=True, num_groups=4)
    cfg = DPTConfig(is_hybrid=True, backbone_config=bit, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=64, image_size=side, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                    neck_hidden_sizes=[16, 32, 32, 32], fusion_hidden_size=16,
                    backbone_featmap_shape=[1, 64, side // 16, side // 16], readout_type="project",
                    reassemble_factors=[1, 1, 1, 0.5])
    DPTForDepthEstimation(cfg).save_pretrained(out_dir)
    write_json(out_dir / "preprocessor_config.json", {**PROCESSOR.published_config(),
                                                      "size": {"height": side, "width": side}})


def load_depth(store: ModelStore, role: str) -> Any:
    from transformers import AutoModelForDepthEstimation

    return store.read_model(role, AutoModelForDepthEstimation)


def full_size() -> Any:
    """DPT at ViT-B size (dpt-hybrid-midas is ViT-B hybrid)."""
    from transformers import DPTConfig, DPTForDepthEstimation

    return DPTForDepthEstimation(DPTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                           intermediate_size=3072, neck_hidden_sizes=[96, 192, 384, 768]))


register(ModelRole(
    "depth", order=9, sources=(REPO,), files=HubFiles((*transformers_files(), PROCESSOR_FILES)),
    licence=card(REPO, APACHE), layout=LAYOUT, tiny=tiny_depth,
    network=Network(load_depth, {MODEL: full_size}, conditioning="all", processor=PROCESSOR),
))
