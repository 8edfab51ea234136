"""The papers' networks at their published sizes with random weights (nothing is
downloaded), behind the ModelStore's readers so every code path is the store's and the
loaders' own. Each network is built by its role's record (models/roles/,
`Network.full_size`); a role whose record says "tiny" runs its tiny build.

With a FakeTensorMode the networks are built as fake tensors (shapes, no memory): the
estimator runs them on any machine. Parking then only keeps the books of what would be on
the GPU (ModelStore.resident_bytes), as it would on CUDA.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ..models.roles import MODEL, network, networks
from ..models.store import ModelStore
from ..models.tiny import build_tiny, tiny_tokenizer


class RandomStore(ModelStore):
    """Full-size networks with random weights, built in memory (nothing is downloaded).
    fake: build them as fake tensors in fp16 (as on CUDA) and only book-keep parking."""

    def __init__(self, device: torch.device | str, scratch: Path, fake: FakeTensorMode | None = None,
                 compile_networks: bool = False, graph_networks: bool = False) -> None:
        tiny = sorted({key.split("/")[0] for key, net in networks() if net.full_size == "tiny"})
        super().__init__(str(build_tiny(scratch, tiny)), device=device, compile_networks=compile_networks,
                         graph_networks=graph_networks)
        # CLIP's BPE at toy size: tokenizers are no network, and the text encoders' vocabularies
        # keep their published 49408 ids.
        self._tokenizer_dir = scratch / "tokenizer"
        tiny_tokenizer(self._tokenizer_dir, fast_file=True)
        self.fake = fake
        if fake is not None:
            self.dtype, self.offload = torch.float16, True

    def _place(self, module: torch.nn.Module, on_device: bool) -> None:
        if self.fake is None:
            super()._place(module, on_device)
        else:
            (self._away.discard if on_device else self._away.add)(id(module))

    def _make(self, build: Callable[[], Any]) -> Any:
        if self.fake is None:
            return build()
        from transformers.initialization import no_init_weights

        default = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)  # built in fp16: fake parameters cannot be converted
        try:
            # Fake weights have no values to initialise, and an initialiser that samples until
            # a test on the values passes (torch's trunc_normal_, in DINO's and DPT's ViTs)
            # would never stop on a fake tensor, whose every test reads as the worst case.
            with self.fake, no_init_weights():
                obj = build()
        finally:
            torch.set_default_dtype(default)
        if isinstance(obj, torch.nn.Module):  # already where it would be: .to() is a no-op
            object.__setattr__(obj, "to", lambda *args, **kwargs: obj)
        return obj

    def _builder(self, role: str, name: str) -> Callable[[], Any]:
        """The full-size builder of a role's part (read_parts' names; MODEL: read_model's)."""
        net = network(role)
        builders = net.full_size if net is not None else None
        if not isinstance(builders, Mapping) or name not in builders:
            raise NotImplementedError(f"bench builds no {role} ({name}): its record has no full-size builder for it")
        return builders[name]

    def read_parts(self, role: str, where: str, parts: dict) -> dict[str, Any]:
        out = {}
        for name in parts:
            if name == "tokenizer":
                out[name] = self.read_tokenizer(role, "")
                continue
            obj = self._make(self._builder(role, name))
            out[name] = obj.to(self.dtype) if isinstance(obj, torch.nn.Module) else obj
        return out

    def read_tokenizer(self, role: str, fallback: str) -> Any:
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(self._tokenizer_dir)

    def processor_config(self, role: str) -> dict[str, Any]:
        return network(role).processor.published_config()  # as vendored, at its published size

    def read_model(self, role: str, cls: Any, where: str | None = None, sub: str | None = None, **kw: Any) -> Any:
        return self._make(self._builder(role, MODEL)).to(self.dtype).requires_grad_(False).eval().to(self.device)
