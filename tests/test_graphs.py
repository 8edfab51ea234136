"""CUDA graphs for the networks a step calls (backend/models/graphs.py).

The capture itself needs a CUDA device (tools/gpu_check.sh runs it); here: the estimator's
stand-in gives the eager values and gradients and is counted as one replay, and the
bookkeeping around captures (one graph a signature and key, a second instance while the
first awaits its backward, a failed capture left eager, weights moved -> captured anew)
with the capture replaced by a recorder."""
import warnings

import pytest
import torch

from backend.models import graphs
from backend.perf.tracker import Tracker


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 4, 3)
                               ).requires_grad_(False)


def test_stand_in_gives_eager_values_and_gradients_and_counts_one_replay_each_way():
    net = _net()
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    eager = Tracker()
    with eager:
        y = net(x)
        (y ** 2).sum().backward()
    g_eager, x.grad = x.grad.clone(), None
    outside = Tracker()  # the step's own work around the network
    with outside:
        z = y.detach().requires_grad_(True)
        (z ** 2).sum().backward()
    graphs.mark(net, "net")
    try:
        counted = Tracker()
        with counted:
            y2 = graphs.call(net, net, (x,))
            (y2 ** 2).sum().backward()
    finally:
        graphs._marked.pop(net)
    assert torch.equal(y2, y) and torch.equal(x.grad, g_eager)
    # Forward: the input's copy and the replay; backward: the gradient's copy and the replay.
    assert counted.launches_by_label["net"] == 2
    assert counted.launches == outside.launches + 4 < eager.launches
    # The kernels inside still do their work: FLOPs and bytes are those of the eager run.
    assert counted.flops == eager.flops > 0 and counted.bytes_moved == eager.bytes_moved
    assert counted.graph_syncs == 0 and counted.syncs == eager.syncs


def test_stand_in_without_gradient_counts_input_copies_replay_and_output_clones():
    net = _net()
    x, t = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    graphs.mark(net, "net")
    try:
        counted = Tracker()
        with counted, torch.no_grad():
            out = graphs.call(net, lambda a, b: (net(a), net(b)), (x, t))
    finally:
        graphs._marked.pop(net)
    assert torch.equal(out[0], net(x)) and torch.equal(out[1], net(t))
    assert counted.launches == 2 + 1 + 2


def test_a_host_sync_inside_a_graph_is_counted_as_a_capture_that_would_fail():
    net = _net()
    graphs.mark(net, "net")
    try:
        tr = Tracker()
        with tr, torch.no_grad():
            graphs.call(net, lambda a: net(a) * float(a.sum()), (torch.rand(1, 3, 8, 8),))
    finally:
        graphs._marked.pop(net)
    assert tr.graph_syncs == 1 and tr.syncs == 0


def test_a_graphs_allocations_are_its_pool_not_live_tensors():
    """What a graphed call allocates stays reserved in its pool: the most alive at once
    (here the 4 KB intermediate and the 4 KB output), apart from the step's live tensors."""
    marker = torch.nn.Identity()
    graphs.mark(marker, "f")
    try:
        tr = Tracker()
        with tr, torch.no_grad():
            x = torch.ones(1024)                                   # 4096 B live, outside
            y = graphs.call(marker, lambda a: (a * 2) + 1, (x,))   # a*2 then +1: 2 x 4096 B in the pool
            del x
    finally:
        graphs._marked.pop(marker)
    assert tr.graph_pools == {"f": 8192} and tr.peak == 4096
    del y


class _Recorder:
    """Stands in for the CUDA capture: records each capture and runs the function."""

    def __init__(self, fail: bool = False) -> None:
        self.captures, self.fail = 0, fail

    def __call__(self, fn, args):  # noqa: ANN001, ANN204
        self.captures += 1
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        return fn


@pytest.fixture
def captured(monkeypatch):  # noqa: ANN001, ANN201
    rec = _Recorder()
    monkeypatch.setattr(graphs, "_capturable", lambda args: True)
    monkeypatch.setattr(graphs, "_capture", rec)
    monkeypatch.setattr(graphs, "_capture_grad", rec)
    net = _net()
    graphs.mark(net, "net")
    yield net, rec
    graphs._marked.pop(net, None)


def test_one_graph_a_signature_and_key(captured):
    net, rec = captured
    a, b = torch.rand(1, 3, 8, 8), torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        for x in (a, a, b, b):
            assert torch.equal(graphs.call(net, net, (x,)), net(x))
        assert rec.captures == 2
        graphs.call(net, net, (a,), key=("pag",))  # a PAG call bakes in other processors
    assert rec.captures == 3


def test_a_graph_awaiting_its_backward_is_not_replayed_again(captured):
    """Views encoded one after another before one backward: each needs its own instance
    (the first's outputs and saved activations would be overwritten); after the backward
    both are free again."""
    net, rec = captured
    x1, x2 = (torch.rand(1, 3, 8, 8, requires_grad=True) for _ in range(2))
    loss = graphs.call(net, net, (x1,)).sum() + graphs.call(net, net, (x2,)).sum()
    assert rec.captures == 2
    loss.backward()
    for x in (x1, x2):
        graphs.call(net, net, (x,)).sum().backward()
    assert rec.captures == 2
    many = [graphs.call(net, net, (x1,)) for _ in range(graphs.MAX_INSTANCES + 2)]  # beyond: eagerly
    assert rec.captures == graphs.MAX_INSTANCES and all(torch.equal(m, many[0]) for m in many)


def test_a_failed_capture_warns_once_and_runs_eagerly(captured):
    net, rec = captured
    rec.fail = True
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = [graphs.call(net, net, (x,)) for _ in range(3)]
    assert rec.captures == 1 and len([w for w in caught if "CUDA graph capture failed for net" in str(w.message)]) == 1
    assert all(torch.equal(o, net(x)) for o in outs)


def test_moved_weights_are_captured_anew_and_unmarked_networks_run_as_they_are(captured):
    net, rec = captured
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        graphs.call(net, net, (x,))
        graphs.forget(net)  # what the store's parking does when it moves a network
        graphs.call(net, net, (x,))
        assert rec.captures == 2
        other = _net()
        assert torch.equal(graphs.call(other, other, (x,)), other(x)) and rec.captures == 2


def test_calls_in_eager_blocks_and_during_a_backward_are_not_captured(captured):
    """A checkpointed call recomputes its forward inside the backward: neither that nor the
    first call (in graphs.eager(), as the MS loss makes it) captures anything."""
    from torch.utils.checkpoint import checkpoint

    net, rec = captured
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    with graphs.eager():
        y = checkpoint(lambda a: graphs.call(net, net, (a,)), x, use_reentrant=False)
    y.sum().backward()
    assert rec.captures == 0 and torch.equal(x.grad, torch.autograd.grad(net(x).sum(), x)[0])
    in_backward = []
    z = x.detach().requires_grad_(True)
    w = z * 1
    w.register_hook(lambda g: in_backward.append(graphs.call(net, net, (z.detach(),))) or g)
    w.sum().backward()
    assert rec.captures == 0 and len(in_backward) == 1
