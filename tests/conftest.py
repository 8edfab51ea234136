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
