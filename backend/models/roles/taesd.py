"""TAESD ("taesd"): the tiny decoder of SD 1.x/2.x latents that decodes aug-SDS's HiFA image
target at about 1/17 of the SD VAE decoder's work."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..catalog import MIT, HubFiles, card, weights_files
from ..layouts import Layout, published
from ..loaders import ModelStore
from . import MODEL, ModelRole, Network, register

REPO = "madebyollin/taesd"

LAYOUT = Layout(
    REPO,
    ("https://huggingface.co/madebyollin/taesd/tree/73b7d1c8836d16997316fb94c4b36a9095442c1d",),
    ("README.md", "config.json", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors",
     "taesd_decoder.safetensors", "taesd_encoder.safetensors"),
    {"config.json": "AutoencoderTiny"},
)


def tiny_taesd(out_dir: Path) -> None:
    """Its published config (scaling factor, shifts, activation as published) at toy width,
    with tiny_vae's 2x latent stride (two blocks: one upsampling)."""
    from diffusers import AutoencoderTiny

    cfg = {k: v for k, v in published(REPO, "config.json").items() if not k.startswith("_")}
    cfg.update(encoder_block_out_channels=(16, 16), decoder_block_out_channels=(16, 16),
               num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1))
    AutoencoderTiny.from_config(cfg).save_pretrained(out_dir)


def load_taesd(store: ModelStore, role: str) -> Any:
    from diffusers import AutoencoderTiny

    model = store.read_model(role, AutoencoderTiny)
    store.compile({f"{role}.decoder": model.decoder})
    store.graph({f"{role}.decoder": model})
    return model


def full_size() -> Any:
    from diffusers import AutoencoderTiny

    return AutoencoderTiny()  # its defaults are madebyollin/taesd's configuration


register(ModelRole(
    "taesd", order=13, sources=(REPO,),
    files=HubFiles((("config.json",), weights_files("", "diffusion_pytorch_model"))), licence=card(REPO, MIT), layout=LAYOUT, tiny=tiny_taesd,
    network=Network(load_taesd, {MODEL: full_size}, conditioning=(), processor=None),
))
