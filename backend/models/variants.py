"""Which weight file of a folder to read: full precision or the repository's fp16 variant.

Hub repositories often publish each weights file twice: `<stem>.safetensors` (float32) and
`<stem>.fp16.safetensors` (half the bytes). On CUDA the store computes in fp16, so the
variant carries everything it needs; on the CPU the full file is preferred, and a folder
that holds only the variant is still read (and upcast). The same preference chooses what a
download fetches (catalog.select_files) and what a loader reads (weights_variant), so the
two never disagree.
"""
from __future__ import annotations

from pathlib import Path

STEMS = ("diffusion_pytorch_model", "model", "pytorch_model")
_FULL = (".safetensors", ".bin")
_HALF = (".fp16.safetensors", ".fp16.bin")


def weight_kind(name: str) -> str | None:
    """'.fp16.safetensors', '.safetensors', '.fp16.bin' or '.bin' for a loader's weights file
    name (`unet/diffusion_pytorch_model.fp16.safetensors`), else None (configs, other
    variants such as `.non_ema.`, originals such as `.ckpt`)."""
    base = name.rsplit("/", 1)[-1]
    for kind in (*_HALF, *_FULL):
        if base.endswith(kind) and base[: -len(kind)] in STEMS:
            return kind
    return None


def preference(half: bool) -> tuple[str, ...]:
    """Weight kinds, best first: safetensors before pickles, the fp16 variant first when the
    model will run in fp16."""
    return (_HALF[0], _FULL[0], _HALF[1], _FULL[1]) if half else (*_FULL, *_HALF)


def choose(kinds: set[str], half: bool) -> str | None:
    """The kind to read among those a folder holds."""
    return next((k for k in preference(half) if k in kinds), None)


def _folder(where: str, sub: str) -> Path | None:
    """A model folder on disk: a local folder's subfolder, or the cached snapshot folder of
    a hub repository's subfolder (found through its config.json), else None."""
    if Path(where).is_dir():
        return Path(where) / sub
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(where, f"{sub}/config.json" if sub else "config.json")
    return Path(config).parent if isinstance(config, str) else None


def weights_variant(where: str, sub: str, half: bool) -> str | None:
    """The `variant` argument for from_pretrained: "fp16" when the chosen weights on disk
    are the fp16 variant, else None (also when nothing is on disk yet)."""
    folder = _folder(where, sub)
    if folder is None or not folder.is_dir():
        return None
    kinds = {k for k in (weight_kind(p.name) for p in folder.iterdir()) if k}
    chosen = choose(kinds, half)
    return "fp16" if chosen in _HALF else None
