"""runtime.compile: the UNets and decoders through torch.compile give the eager outputs
(inductor on the CPU here; the GPU uses the same graphs through Triton), gradient-free
calls only, and a failing compile falls back to eager with a warning."""
import warnings

import pytest
import torch
from torch._dynamo.utils import counters

from backend.guidance.diffusion import SDDenoiser
from backend.models import compiled
from backend.models.store import ModelStore
from backend.models.tiny import EMBED_DIM, build_tiny
from backend.pipeline.config import resolve
from backend.pipeline.prepare import networks_compiled
from backend.models.encoders import tiny_decoder


def test_compile_is_asked_for_by_the_preset_and_used_on_cuda_only():
    assert not networks_compiled(resolve("standard"), torch.device("cuda"))  # off until measured on a GPU
    on = resolve("standard", {"runtime.compile": True})
    assert networks_compiled(on, torch.device("cuda")) and not networks_compiled(on, torch.device("cpu"))


def test_a_failing_compile_runs_eagerly_with_a_warning_and_gradients_never_compile(monkeypatch):
    calls = []

    def broken(fn):  # noqa: ANN001, ANN202 (stands in for torch.compile)
        def run(*args, **kwargs):  # noqa: ANN202
            calls.append("compiled")
            raise RuntimeError("inductor: no compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    lin = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    expected = lin(x)
    compiled.compile_for_inference(lin, "lin")
    y = lin(x)  # gradient on: eager, the compiled graph is not asked
    assert calls == [] and torch.equal(y, expected)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="torch.compile failed for lin"):
        assert torch.equal(lin(x), expected)
    assert calls == ["compiled"]
    with torch.no_grad():
        assert torch.equal(lin(x), expected)  # eager from then on: no second attempt
    assert calls == ["compiled"]


@pytest.mark.slow
def test_compiled_unet_and_decoders_give_the_eager_outputs(tmp_path):
    root = build_tiny(tmp_path, ["unclip", "taesd"])
    c_m = torch.randn(1, EMBED_DIM, generator=torch.Generator().manual_seed(0))  # unCLIP's input: raw scale
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([300, 700])
    out = {}
    torch._dynamo.reset()
    for name, store in (("eager", ModelStore(str(root))), ("compiled", ModelStore(str(root), compile_networks=True))):
        den = SDDenoiser(store.get("unclip"), "a chair", guidance_scale=5.0, resolution=32, image_embeds=c_m)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("error", message="torch.compile failed")  # a fallback would fail the test
            out[name] = [den.predict_noise(z, t, None), *den.branches(z, t, perturbed=True),  # PAG: a second graph
                         den.decode(z), tiny_decoder(store)(z)]
    # the UNet with and without PAG's processors, the VAE decoder one view at a time, TAESD
    assert counters["stats"]["unique_graphs"] >= 4
    for eager, fast in zip(out["eager"], out["compiled"]):
        assert torch.allclose(eager, fast, atol=1e-4), (eager - fast).abs().max()
