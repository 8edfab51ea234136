"""A real Ray cluster on this machine for the farm tests: a head and extra node processes,
each offering one "conjure_gpu" (the custom resource CPU-only clusters use in place of a
GPU), a small object store, fast node-death detection; torn down by the caller."""
from __future__ import annotations

import contextlib
import importlib.util
from typing import Iterator

import pytest

RESOURCE = "conjure_gpu"
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray not installed: make test installs requirements/cluster.txt")
# Node death is noticed within about 1.5 s instead of Ray's default 15 s (tests stay short).
FAST_HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_timeout_ms": 500,
               "health_check_failure_threshold": 3}


@contextlib.contextmanager
def local_cluster(extra_nodes: int = 1) -> Iterator[object]:
    """-> a ray.cluster_utils.Cluster with 1 + extra_nodes nodes, one worker slot each; its
    token comes from conftest.py (the processes started meanwhile inherit it)."""
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "resources": {RESOURCE: 1}, "object_store_memory": 128 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False,
                                                            "_system_config": FAST_HEALTH})
    try:
        for _ in range(extra_nodes):
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
