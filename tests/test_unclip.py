import torch

from backend.guidance.base import SDS, TimestepSchedule
from backend.guidance.diffusion import SDDenoiser
from backend.models.registry import ModelStore
from backend.models.tiny import build_tiny


def test_unclip_conditions_on_image_embeds(tmp_path):
    build_tiny(tmp_path, ["unclip"])
    sd = ModelStore(str(tmp_path)).sd("unclip")
    assert sd.prediction_type == "v_prediction" and sd.image_normalizer is not None
    c_m = torch.nn.functional.normalize(torch.randn(1, 32), dim=-1)
    a = SDDenoiser(sd, "", resolution=32, image_embeds=c_m)
    b = SDDenoiser(sd, "", resolution=32, image_embeds=-c_m)
    z, t = torch.randn(1, 4, 16, 16), torch.tensor([400])
    ua, ca = a.branches(z, t)
    ub, cb = b.branches(z, t)
    assert torch.allclose(ua, ub, atol=1e-6)  # unconditional: zero image embeds either way
    assert not torch.allclose(ca, cb, atol=1e-5)  # conditional follows C_m
    images = torch.rand(1, 32, 32, 3, requires_grad=True)
    out = SDS(a, TimestepSchedule(), image_weight=0.1)(images, None, 0, 1)
    (out["sds"] + out["sds_image"]).backward()
    assert images.grad.abs().sum() > 0
    # Renders smaller than the denoiser's resolution (the standard preset: 128 vs 768).
    small = torch.rand(2, 24, 24, 3, requires_grad=True)
    out = SDS(a, TimestepSchedule(), image_weight=0.1)(small, None, 0, 1)
    out["sds_image"].backward()
    assert small.grad.abs().sum() > 0
