"""torch.compile for the networks a step calls without gradient (the UNets and decoders):
fused kernels and fewer launches, the same outputs.

Only gradient-free calls go through the compiled graph: a network called with gradient on
runs eagerly, so no backward graph is ever compiled (AOTAutograd would compile it lazily
at the first backward, where a failure could not fall back). The first call of each input
shape compiles; if compiling or running the compiled graph fails, the network runs
eagerly from then on and a RuntimeWarning says why (out of memory is not a compile
failure and is raised as it is).
"""
from __future__ import annotations

import warnings
from typing import Any

import torch


def compile_for_inference(module: torch.nn.Module, name: str) -> None:
    """Route module's gradient-free forward calls through torch.compile, in place."""
    eager = module.forward
    fast = torch.compile(eager)

    def forward(*args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            return eager(*args, **kwargs)
        try:
            return fast(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 (dynamo and inductor raise many kinds)
            warnings.warn(f"torch.compile failed for {name} ({type(exc).__name__}: {exc}); it runs eagerly",
                          RuntimeWarning, stacklevel=2)
            module.forward = eager
            return eager(*args, **kwargs)

    module.forward = forward
