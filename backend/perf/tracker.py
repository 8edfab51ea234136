"""Op-level accounting of one training step: live memory by component, FLOPs, kernel
launches and bytes moved, for real and fake tensors alike.

`Tracker` is a TorchDispatchMode. Every aten op that runs while it is active passes
through it (forward and backward), so it sees exactly what the GPU would allocate:
- memory: each new storage an op returns is counted under the component that was running
  (`label_modules` maps modules to names; everything else is "render+losses") until the
  storage dies; the peak is kept with its breakdown. Weights and other tensors made before
  the step are not counted here (the estimator adds them).
- launches: ops that are not views (one kernel each, roughly; eager PyTorch on CUDA);
- host syncs: ops whose result the host must read back (scalars, data-dependent sizes),
  counted when launches came before them (reads back to back wait once); a read of what
  a CPU generator drew (a shading mode, a timestep gap) is host work on a GPU machine too
  and is not counted (the estimator runs everything on the CPU, so it is told apart here);
  a read that sizes a render's first use in a phase (render/sizes.py) happens once a phase,
  not a step, and is counted apart in `syncs_once`; `sync_sites` names where each was;
- FLOPs: matmuls, convolutions and attention by torch's own flop formulas;
- CUDA graphs (models/graphs.py): a network call that would replay a graph counts the
  launches of the replay (its input copies and the replay), not the kernels inside, whose
  FLOPs and bytes still count. What a graphed call allocates lives in the graph's private
  pool, which stays reserved: it is kept apart from the live tensors, one pool a network
  (its backward shares its forward's), sized by the most of its allocations alive at once.
  A host sync inside one is a capture that would fail, counted in `graph_syncs`;
- bytes: tensor inputs + outputs of each launch (what a memory-bound kernel moves; the
  fused hash grid's gathers: the table rows they touch).

Networks can be fake tensors (FakeTensorMode: shapes without data) while the renderers
stay real; fake values are contagious, so everything downstream of a network is fake.
Data-dependent ops on fake tensors get their worst case: a boolean mask selects every
element, `.item()` of a mask is True and of a number 0 (the memory of a selection is
bounded by the all-true case, which is also the first steps of a run: occupancy starts
full, every ray hits the box).
"""
from __future__ import annotations

import traceback
import weakref
from collections import Counter
import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

from ..models import graphs
from ..render import sizes

aten = torch.ops.aten
OUTSIDE = "render+losses"  # allocations made outside any labelled network
_GRAPH = "graph pool: "
_NO_KERNEL = {aten.detach.default, aten.lift_fresh.default, aten._local_scalar_dense.default,
              aten.empty.memory_format, aten.empty_strided.default, aten.set_.source_Storage_storage_offset,
              aten._unsafe_view.default}
# Metadata queries (prim.device: every `.device` of a fake tensor is dispatched) and the
# profiler's markers launch nothing; counting them made 77% of standard's "launches".
_NO_KERNEL_NAMESPACES = ("prim", "profiler")


def launches_kernel(func) -> bool:  # noqa: ANN001 (an OpOverload)
    """Whether eager PyTorch on CUDA runs a kernel for this op: not a view, an alias, an
    allocation without fill, a scalar read or a metadata query."""
    return func not in _NO_KERNEL and not func.is_view and func.namespace not in _NO_KERNEL_NAMESPACES


# Ops whose result size or value the host must read back: on CUDA each waits until the GPU
# has drained its queue (a host sync), so the launches after it are no longer hidden.
_SYNCS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.argwhere.default, aten.masked_select.default,
          aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
          aten.repeat_interleave.Tensor}
_INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}


def host_sync(func, args: tuple) -> bool:  # noqa: ANN001 (an OpOverload)
    """Whether the op reads device data on the host: a scalar, a data-dependent size, or
    indexing by a boolean mask (a nonzero inside)."""
    if func in _SYNCS:
        return True
    return func in _INDEXING and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])


# The fused hash-grid kernels (geometry/hashgrid_triton.py) read or atomically update the
# table rows their points touch, not the whole table: op -> (position of the table among
# the args, or None when the op makes a zeroed table as its output; passes over the touched
# rows). Their args are (x [N,3], ..., meta, bound), meta = [levels, features, ...]: a pass
# touches N * levels * 8 corners * features floats, and no more than the table holds (the
# points share corners, which the cache serves).
_GATHERS = {"conjure::hashgrid_encode": (1, 1), "conjure::hashgrid_encode_backward": (None, 1),
            "conjure::hashgrid_vjp": (1, 1), "conjure::hashgrid_vjp_backward": (1, 2)}


def launch_bytes(func, args: tuple, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> int:  # noqa: ANN001
    """What a launch moves: its tensor inputs and outputs (a memory-bound kernel reads and
    writes each once), except that a gather kernel moves the rows it touches of its table."""
    moved = sum(t.nbytes for t in inputs) + sum(t.nbytes for t in outputs)
    gather = _GATHERS.get(func._schema.name) if hasattr(func, "_schema") else None
    if gather is not None:
        table_at, passes = gather
        levels, features = args[-2][0], args[-2][1]
        table = args[table_at].nbytes if table_at is not None else outputs[-1].nbytes
        if table_at is not None:
            moved -= table
        moved += passes * min(table, args[0].shape[0] * levels * 8 * features * 4)
    return moved


def _call_site() -> str:
    """The innermost backend frame outside the perf package: where a sync was asked for."""
    for frame in reversed(traceback.extract_stack()):
        path = frame.filename.replace("\\", "/")
        if "/backend/" in path and "/backend/perf/" not in path:
            return f"{path.split('/backend/', 1)[1]}:{frame.lineno}"
    return "?"


def _tensors(tree: object) -> list[torch.Tensor]:
    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]


class Tracker(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[int, str]] = {}  # id(storage) -> (bytes, label)
        self.by_label: Counter = Counter()
        self.current = 0
        self.peak = 0
        self.peak_by_label: dict[str, int] = {}
        self.flops = 0
        self.launches = 0
        self.syncs = 0
        self._queued = True  # work the device may still be doing (the step's first read waits)
        self.bytes_moved = 0
        self.launches_by_label: Counter = Counter()
        self.flops_by_label: Counter = Counter()
        self.bytes_by_label: Counter = Counter()
        self._labels: dict[int, str] = {}
        self._stack: list[str] = []
        self._hooks: list = []
        self._graph_depth = 0
        self._graph_name = ""
        self._graph_live: Counter = Counter()  # network -> bytes its graphs' calls allocated, alive
        self.graph_pools: dict[str, int] = {}  # network -> its graphs' pool: the most of those at once
        self.graph_syncs = 0
        self.syncs_once = 0
        self.sync_sites: Counter = Counter()  # "file:line op" -> host syncs counted there
        self._drawn: weakref.WeakSet = weakref.WeakSet()  # storages a CPU generator wrote

    # -- components ---------------------------------------------------------------------
    def label_modules(self, modules: dict[str, torch.nn.Module]) -> None:
        """Allocations made inside these modules' forward count under their names."""
        for name, module in modules.items():
            self._labels[id(module)] = name

    @property
    def label(self) -> str:
        if self._stack:
            return self._stack[-1]
        return "backward" if torch._C._current_graph_task_id() != -1 else OUTSIDE

    def _pre(self, module: torch.nn.Module, args: object) -> None:
        name = self._labels.get(id(module))
        if name is not None:
            self._stack.append(name)

    def _post(self, module: torch.nn.Module, args: object, out: object) -> None:
        if id(module) in self._labels and self._stack:
            self._stack.pop()

    def __enter__(self) -> "Tracker":
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        # always_call: checkpoint recomputation stops early by raising inside forward.
        self._hooks = [register_module_forward_pre_hook(self._pre),
                       register_module_forward_hook(self._post, always_call=True)]
        graphs.observe(self)
        # Tensor.tolist reads a CPU tensor without dispatching an op: seen here instead.
        self._tolist = torch.Tensor.tolist
        tracker, tolist = self, self._tolist

        def counted_tolist(t: torch.Tensor) -> object:
            if not isinstance(t, FakeTensor):  # a fake one dispatches its reads itself
                tracker._read(aten._local_scalar_dense.default, (t,))
            return tolist(t)

        torch.Tensor.tolist = counted_tolist
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        graphs.unobserve(self)
        torch.Tensor.tolist = self._tolist
        super().__exit__(*exc)

    # -- CUDA graphs (models/graphs.py's observer) ---------------------------------------
    def graph_enter(self, name: str, launches: int) -> None:
        self._graph_depth += 1
        if self._graph_depth > 1:
            return
        backward = self.label == "backward"
        label = "backward" if backward else name
        self.launches += launches
        self.launches_by_label[label] += launches
        self._queued = True
        self._graph_name = name

    def graph_exit(self, name: str) -> None:
        self._graph_depth -= 1

    # -- memory -------------------------------------------------------------------------
    def _track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = id(st)
        n = st.nbytes()
        if key in self._live or n == 0:
            return
        weakref.finalize(st, self._free, key).atexit = False  # nothing to count once Python exits
        if self._graph_depth:  # in the graph's private pool (a backward's too: it shares the forward's)
            name = self._graph_name
            self._live[key] = (n, _GRAPH + name)
            self._graph_live[name] += n
            self.graph_pools[name] = max(self.graph_pools.get(name, 0), self._graph_live[name])
            return
        label = self.label
        self._live[key] = (n, label)
        self.by_label[label] += n
        self.current += n
        if self.current > self.peak:
            self.peak = self.current
            self.peak_by_label = {k: v for k, v in self.by_label.items() if v}

    def _free(self, key: int) -> None:
        n, label = self._live.pop(key, (0, OUTSIDE))
        if label.startswith(_GRAPH):
            self._graph_live[label[len(_GRAPH):]] -= n
            return
        self.by_label[label] -= n
        self.current -= n

    # -- dispatch -----------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        inputs = _tensors((args, kwargs))
        fake = next((t for t in inputs if isinstance(t, FakeTensor)), None)
        # A host sync waits for the work queued since the last one: reads with no launch in
        # between (x.tolist() reads element by element) wait for nothing new.
        if host_sync(func, args):
            self._read(func, args)
        out = NotImplemented
        if fake is not None:
            func, args, kwargs, out = _worst_case(func, args, kwargs, fake)
            if func is None:  # a scalar answer: no kernel
                return out
        if out is NotImplemented:
            out = func(*args, **kwargs)
        generator = kwargs.get("generator")
        if isinstance(generator, torch.Generator) and generator.device.type == "cpu":
            for t in _tensors(out):
                self._drawn.add(t.untyped_storage())
        if launches_kernel(func):
            outputs = _tensors(out)
            self._queued = True
            if not self._graph_depth:
                self.launches += 1
                self.launches_by_label[self.label] += 1
            moved = launch_bytes(func, args, inputs, outputs)
            self.bytes_moved += moved
            self.bytes_by_label[self.label] += moved
            count = flop_registry.get(func._overloadpacket)
            if count is not None:
                f = int(count(*args, **kwargs, out_val=out))
                self.flops += f
                self.flops_by_label[self.label] += f
            for t in outputs:
                self._track(t)
        return out

    def _read(self, func, args: tuple) -> None:  # noqa: ANN001
        """The host reads device data (func: the op that reads)."""
        if self._host_read(func, args):
            return
        if self._graph_depth:
            self.graph_syncs += 1
        elif sizes.first_read():
            self.syncs_once += 1
        elif self._queued:
            self.syncs += 1
            self._queued = False
            self.sync_sites[f"{_call_site()} {func._schema.name}"] += 1

    def _host_read(self, func, args: tuple) -> bool:  # noqa: ANN001
        """A scalar read of a CPU generator's draw (never on the GPU, whatever the device)."""
        return (func is aten._local_scalar_dense.default and isinstance(args[0], torch.Tensor)
                and not isinstance(args[0], FakeTensor) and args[0].untyped_storage() in self._drawn)

    def report(self) -> dict:
        return {"peak_bytes": self.peak, "peak_by_label": dict(self.peak_by_label), "flops": self.flops,
                "launches": self.launches, "syncs": self.syncs, "bytes_moved": self.bytes_moved,
                "launches_by_label": dict(self.launches_by_label), "flops_by_label": dict(self.flops_by_label),
                "bytes_by_label": dict(self.bytes_by_label), "graph_syncs": self.graph_syncs,
                "syncs_once": self.syncs_once, "sync_sites": dict(self.sync_sites),
                "graph_pool_bytes": sum(self.graph_pools.values()),
                "graph_pools": dict(self.graph_pools)}


def _mask_indices(mask: torch.Tensor, fake: FakeTensor) -> list[torch.Tensor]:
    """Index tensors of a boolean mask: exact for a real mask, every element (the worst
    case) for a fake one."""
    if not isinstance(mask, FakeTensor):
        return list(torch.nonzero(mask).unbind(1))
    with fake.fake_mode:
        return [torch.empty(mask.numel(), dtype=torch.long, device=mask.device) for _ in range(mask.dim())]


def _worst_case(func, args: tuple, kwargs: dict, fake: FakeTensor):  # noqa: ANN001, ANN202
    """A data-dependent op on fake tensors, rewritten to its worst case.
    -> (func, args, kwargs, out): out is the result when already made here (func None for
    a Python scalar), else NotImplemented and the (possibly rewritten) op is run."""
    if func is aten._local_scalar_dense.default:
        dtype = args[0].dtype
        return None, args, kwargs, True if dtype == torch.bool else 0.0 if dtype.is_floating_point else 0
    if func in (aten.nonzero.default, aten.argwhere.default, aten.masked_select.default):
        x = args[0]
        shape, dtype = ((x.numel(), x.dim()), torch.long) if func is not aten.masked_select.default else \
            ((x.numel(),), x.dtype)
        with fake.fake_mode:
            return func, args, kwargs, torch.empty(shape, dtype=dtype, device=x.device)
    if func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default):
        indices = args[1]
        if any(i is not None and i.dtype == torch.bool for i in indices):
            new: list = []
            for i in indices:
                new += _mask_indices(i, fake) if i is not None and i.dtype == torch.bool else [i]
            args = (args[0], new, *args[2:])
    return func, args, kwargs, NotImplemented
