"""ImageBind huge ("imagebind"): the joint embedding C_m is built in (text, image, audio).
Not on the hub: one checkpoint from its official address, into $CONJURE_CACHE/imagebind;
its text tokenizer is OpenAI CLIP's BPE ("imagebind_tokenizer")."""
from __future__ import annotations

from pathlib import Path

import torch

from ..catalog import Licence, URLFile
from ..imagebind import CHECKPOINT
from ..loaders import load_imagebind
from ..tiny import EMBED_DIM, tiny_tokenizer
from . import ModelRole, Network, register


def tiny_imagebind(out_dir: Path, out_dim: int = EMBED_DIM) -> None:
    """ImageBind checkpoint layout (imagebind_huge.pth + config.json) at toy width with the
    huge model's 1024-d embedding (unCLIP takes it as image_embeds), with the byte-level
    tokenizer in tokenizer/ (the files of openai/clip-vit-large-patch14, where the default
    role reads it)."""
    from transformers import CLIPTokenizer

    from ..imagebind import ImageBind, ImageBindConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    tiny_tokenizer(out_dir / "tokenizer", fast_file=True)
    vocab = len(CLIPTokenizer.from_pretrained(out_dir / "tokenizer"))
    cfg = ImageBindConfig(out_dim=out_dim, vision=(32, 2, 4), text=(32, 2, 4), audio=(32, 2, 4), depth=(16, 1, 4),
                          thermal=(16, 1, 4), imu=(16, 1, 4), vocab_size=vocab, image_size=28)
    torch.save(ImageBind(cfg).state_dict(), out_dir / CHECKPOINT)
    cfg.save(out_dir)


register(ModelRole(
    # sources: the folder under the Conjure cache it is downloaded to (cache_folder).
    "imagebind", order=1, sources=("imagebind",),
    # Upstream publishes no checksum for imagebind_huge.pth: the download records the SHA-256
    # it computed beside the file (imagebind_huge.pth.sha256); CONJURE_IMAGEBIND_SHA256 pins one.
    files=URLFile(f"https://dl.fbaipublicfiles.com/imagebind/{CHECKPOINT}", CHECKPOINT, env="CONJURE_IMAGEBIND"),
    licence=Licence("CC-BY-NC 4.0 (non-commercial use only)",
                    "https://github.com/facebookresearch/ImageBind/blob/main/LICENSE"),
    layout=None, tiny=tiny_imagebind, companions=("imagebind_tokenizer",),
    # bench and the estimator run a tiny ImageBind: its embedding is the huge model's 1024-d
    # (unCLIP's image_embeds), and it runs once a job, to condition.
    network=Network(load_imagebind, "tiny", conditioning="all", processor=None),
))
