"""VPCSM on tiny SD 1.5 + IP-Adapter folders: IP fusion, PAG branch, scales."""
import pytest
import torch

from backend.guidance.csm import CSM, CSMConfig
from backend.guidance.diffusion import SDDenoiser
from backend.guidance.vpcsm import VPCSM, VPCSMConfig
from backend.models.store import ModelStore
from backend.models.tiny import build_tiny
from backend.models.encoders import ip_adapter


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ModelStore:
    return ModelStore(str(build_tiny(tmp_path_factory.mktemp("tiny"), ["sd", "ip_adapter"])))


@pytest.fixture(scope="module")
def parts(store):
    plain = SDDenoiser(store.get("sd"), "a robot", resolution=32)
    eps_plain = lambda z, t: plain.branches(z, t)  # noqa: E731 (before the adapter is loaded)
    z = torch.randn(2, 4, 16, 16)
    t = torch.tensor([300, 300])
    before = eps_plain(z, t)
    encoder = ip_adapter(store, store.get("sd"))
    visual = encoder(torch.rand(1, 3, 40, 40))
    return z, t, before, visual


def test_ip_scale_zero_equals_plain_sd(store, parts):
    z, t, before, visual = parts
    den = SDDenoiser(store.get("sd"), "a robot", resolution=32, visual_prompt=visual, ip_scale=0.0)
    after = den.branches(z, t)
    assert torch.allclose(after[0], before[0], atol=1e-5) and torch.allclose(after[1], before[1], atol=1e-5)
    den_on = SDDenoiser(store.get("sd"), "a robot", resolution=32, visual_prompt=visual, ip_scale=0.5)
    on = den_on.branches(z, t)
    assert torch.allclose(on[0], before[0], atol=1e-5)  # uncond branch: zero image embeds
    assert not torch.allclose(on[1], before[1], atol=1e-4)  # cond branch sees the visual prompt


def test_pag_branch_differs_and_scale_zero_removes_it(store, parts):
    z, t, _, visual = parts
    den = SDDenoiser(store.get("sd"), "a robot", resolution=32, visual_prompt=visual, ip_scale=0.5)
    eps_u, eps_c, eps_p = den.branches(z, t, perturbed=True)
    plain_u, plain_c = den.branches(z, t)  # processors restored after the perturbed call
    assert torch.allclose(eps_u, plain_u, atol=1e-5) and torch.allclose(eps_c, plain_c, atol=1e-5)
    assert not torch.allclose(eps_p, eps_c, atol=1e-4)  # PAG's identity self-attention changes it
    with_pag = VPCSM(den, VPCSMConfig(pag_scale=1.0), "sds", 5).delta(z, t, None)
    no_pag = VPCSM(den, VPCSMConfig(pag_scale=0.0), "sds", 5).delta(z, t, None)
    assert torch.allclose(no_pag, CSM(den, CSMConfig(), "sds", 5).delta(z, t, None), atol=1e-6)
    assert torch.allclose(with_pag - no_pag, eps_c - eps_p, atol=1e-4)
