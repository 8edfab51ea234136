"""CUDA graphs for the frozen networks a step calls (the VAE encoders, the UNets, TAESD, the
CLIP image tower): a call of a fixed signature replays one captured graph, one launch from
the host instead of the hundreds eager PyTorch makes, and its backward replays a second.

A network is marked once, when the store loads it (`mark`); its call sites go through
`call(module, fn, args, key)`, where fn is a function of the tensors in args only (every
other input it reads, a guidance scale, a PAG switch, is in key: a graph bakes in what it
read at capture). On CUDA:
- with gradient (an input needs one): torch.cuda.make_graphed_callables, whose forward and
  backward each replay a graph. Its outputs and saved activations are static buffers, so a
  graph whose backward has not run yet is not replayed again: a second instance is
  captured (a network called again before the step's backward), and beyond MAX_INSTANCES
  the call runs eagerly;
- without gradient: one torch.cuda.CUDAGraph; inputs copied into its static inputs, the
  outputs cloned out.
A capture that fails warns once and leaves that signature eager. Calls inside `eager()` (a
checkpointed call: its recomputation would replay or capture inside a backward) and calls
during a backward run eagerly. Graphs hold the addresses
of the weights they read: moving a network (the store's parking) forgets its graphs, and
each graph keeps a private memory pool, freed when it is forgotten.

Elsewhere (the CPU, the estimator's fake tensors) calls run eagerly; while an observer is
registered (perf/tracker.py), a call runs as the graph's stand-in instead, an autograd
Function with the same boundary (inputs detached, gradients to inputs only), so that the
observer sees which work one replay would launch.
"""
from __future__ import annotations

import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, Protocol, Sequence

import torch

Outputs = torch.Tensor | tuple[torch.Tensor, ...]
MAX_INSTANCES = 4   # graphs of one signature pending backward at once (views encoded in turn)
MAX_SIGNATURES = 8  # per network: shapes beyond these (previews at odd sizes) run eagerly


class Observer(Protocol):
    def graph_enter(self, name: str, launches: int) -> None: ...
    def graph_exit(self, name: str) -> None: ...


_observers: list[Observer] = []
_eager = 0  # depth of eager() blocks
_marked: "weakref.WeakKeyDictionary[torch.nn.Module, _Network]" = weakref.WeakKeyDictionary()


@dataclass
class _Instance:
    run: Callable[..., Any]
    pending: bool = False  # forward replayed, its backward not yet run


@dataclass
class _Network:
    name: str
    graphs: dict[Hashable, list[_Instance] | None] = field(default_factory=dict)  # None: capture failed


def mark(module: torch.nn.Module, name: str) -> None:
    """Calls through `call` with this module replay CUDA graphs from now on."""
    _marked.setdefault(module, _Network(name))


def forget(module: torch.nn.Module) -> None:
    """Drop a network's graphs (its weights moved): the next call captures anew."""
    net = _marked.get(module)
    if net is not None:
        net.graphs.clear()


@contextmanager
def eager() -> Iterator[None]:
    """Calls in this block run as they are (not captured, not counted as graphs)."""
    global _eager
    _eager += 1
    try:
        yield
    finally:
        _eager -= 1


def observe(observer: Observer) -> None:
    _observers.append(observer)


def unobserve(observer: Observer) -> None:
    _observers.remove(observer)


def call(module: torch.nn.Module, fn: Callable[..., Outputs], args: Sequence[torch.Tensor],
         key: Hashable = ()) -> Outputs:
    """fn(*args), through a CUDA graph when the module is marked and args are on CUDA."""
    net = _marked.get(module)
    if net is None or _eager or torch._C._current_graph_task_id() != -1:
        return fn(*args)
    if _observers:
        return _stand_in(net.name, fn, tuple(args))
    if not _capturable(args):
        return fn(*args)
    grad = torch.is_grad_enabled() and any(a.requires_grad for a in args)
    sig = (grad, key, tuple((a.shape, a.dtype, a.device, a.requires_grad) for a in args))
    if sig not in net.graphs:
        if len(net.graphs) >= MAX_SIGNATURES:
            return fn(*args)
        net.graphs[sig] = []
    instances = net.graphs[sig]
    if instances is None:
        return fn(*args)
    inst = next((i for i in instances if not i.pending), None)
    if inst is None:
        if len(instances) >= MAX_INSTANCES:
            return fn(*args)
        try:
            inst = _Instance(_capture_grad(fn, args) if grad else _capture(fn, args))
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 (capture raises many kinds: a host sync, an op not capturable)
            warnings.warn(f"CUDA graph capture failed for {net.name} ({type(exc).__name__}: {exc}); "
                          "it runs eagerly", RuntimeWarning, stacklevel=2)
            net.graphs[sig] = None
            return fn(*args)
        instances.append(inst)
    out = inst.run(*args)
    if grad:
        _pend(inst, out)
    return out


def _capturable(args: Sequence[torch.Tensor]) -> bool:
    return all(a.is_cuda for a in args)


def _pend(inst: _Instance, out: Outputs) -> None:
    """The instance is busy until autograd runs its backward node."""
    first = out if isinstance(out, torch.Tensor) else out[0]
    if first.grad_fn is None:
        return
    inst.pending = True

    def done(*_: Any) -> None:
        inst.pending = False

    first.grad_fn.register_hook(done)


def _capture_grad(fn: Callable[..., Outputs], args: Sequence[torch.Tensor]) -> Callable[..., Any]:
    samples = tuple(a.detach().clone().requires_grad_(a.requires_grad) for a in args)
    return torch.cuda.make_graphed_callables(fn, samples, allow_unused_input=True)


def _capture(fn: Callable[..., Outputs], args: Sequence[torch.Tensor]) -> Callable[..., Outputs]:
    static = [a.detach().clone() for a in args]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture: lazy init, cuDNN's algorithm choice
        for _ in range(2):
            fn(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*static)

    def replay(*inputs: torch.Tensor) -> Outputs:
        for s, x in zip(static, inputs):
            s.copy_(x)
        graph.replay()
        return out.clone() if isinstance(out, torch.Tensor) else tuple(o.clone() for o in out)

    return replay


# -- the estimator's stand-in -------------------------------------------------------------
def _outputs(out: Outputs) -> tuple[torch.Tensor, ...]:
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def _stand_in(name: str, fn: Callable[..., Outputs], args: tuple[torch.Tensor, ...]) -> Outputs:
    """fn(*args) with the boundary of a graph and the observers told what one replay
    launches: the input copies and the replay (without gradient, the output clones too)."""
    if torch.is_grad_enabled() and any(a.requires_grad for a in args):
        kind: dict[str, bool] = {}
        out = _StandIn.apply(name, fn, kind, *args)
        return out[0] if kind["single"] else out
    for o in _observers:
        o.graph_enter(name, 1 + len(args))
    try:
        out = fn(*args)
    finally:
        for o in _observers:
            o.graph_exit(name)
    for o in _outputs(out):  # the clones out of the static outputs
        for obs in _observers:
            obs.graph_enter(name, 1)
            obs.graph_exit(name)
    return out


class _StandIn(torch.autograd.Function):
    """A graphed call with gradient as make_graphed_callables builds it (one autograd node
    over the inputs, gradients to inputs only), run eagerly."""

    @staticmethod
    def forward(ctx: Any, name: str, fn: Callable[..., Outputs], kind: dict[str, bool],
                *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        for o in _observers:
            o.graph_enter(name, 1 + len(args))
        try:
            with torch.enable_grad():
                inner = [a.detach().requires_grad_(a.requires_grad) for a in args]
                out = fn(*inner)
        finally:
            for o in _observers:
                o.graph_exit(name)
        kind["single"] = isinstance(out, torch.Tensor)
        ctx.name, ctx.inner, ctx.out = name, inner, _outputs(out)
        return tuple(o.detach() for o in ctx.out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        wanted = [a for a in ctx.inner if a.requires_grad]
        for o in _observers:
            o.graph_enter(ctx.name, 1 + len(grads))
        try:
            got = iter(torch.autograd.grad(ctx.out, wanted, grads, allow_unused=True))
        finally:
            for o in _observers:
                o.graph_exit(ctx.name)
        return (None, None, None, *(next(got) if a.requires_grad else None for a in ctx.inner))
