import os
import secrets
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Ray clusters the farm tests start use a token of this run's (Ray's default writes one to
# ~/.ray); set before Ray is imported, which caches its auth settings.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
# The fused hash-grid kernels run on CPU tensors through Triton's interpreter, which Triton
# reads when the kernels are defined (HashGrid takes them only on CUDA; their tests call them).
os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# `make test` runs two pytest-xdist workers, one a lane (below): each gets half the cores, set
# before torch is imported and inherited by the job and Blender processes that tests start, so
# the two lanes never ask for twice the machine's threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))

# The end-to-end oracle runs (minutes each, their own job folders, no models, no ports) take
# one lane; every other test keeps the other, in the order a plain `pytest` runs it (the farm
# and Blender tests share ports, Ray and the tiny-model cache).
E2E_LANE = {"test_oracle_e2e.py", "test_modes_e2e.py"}

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def raster():
    from backend.render.raster import TorchRasterizer

    return TorchRasterizer()


@pytest.fixture
def deterministic():
    """Deterministic kernels: on CPU the backward of x[index] sums duplicate indices in
    thread order, so two identical runs differ in the last bits without it."""
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: without xdist it is never called
def pytest_xdist_make_scheduler(config, log):  # noqa: ANN001, ANN201 (xdist's hook)
    """The two lanes as xdist's load-scope scheduling with two scopes: each scope goes to one
    worker whole, in collection order. (Its loadgroup marks are lost on pytest 9.2, which no
    longer lets a plugin rename a test: pytest-dev/pytest-xdist#1386.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "e2e" if nodeid.split("::")[0].rsplit("/", 1)[-1] in E2E_LANE else "main"

    return Lanes(config, log)
