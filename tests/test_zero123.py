import torch

from backend.guidance.zero123 import Zero123Denoiser
from backend.models.encoders import clip_image_encoder
from backend.models.store import ModelStore
from backend.models.tiny import build_tiny
from backend.render.camera import orbit_cameras
from backend.render.shading import fixed_views


def test_zero123_loads_and_conditions_on_relative_pose(tmp_path):
    build_tiny(tmp_path, ["zero123"])
    store = ModelStore(str(tmp_path))
    comps = store.get("zero123")
    assert comps.unet.config.in_channels == 8 and comps.resolution == 256
    encoder = clip_image_encoder(store, "zero123/image_encoder", differentiable=False)
    den = Zero123Denoiser(comps, encoder, torch.rand(40, 40, 3), ref_elevation=0.0, ref_azimuth=0.0, guidance_scale=3.0)
    at_ref = fixed_views(orbit_cameras(0.0, 0.0, 2.5, 40.0, 32))
    side = fixed_views(orbit_cameras(20.0, 90.0, 2.5, 40.0, 32))
    # the context at the reference camera projects [embedding, 0, 0, 1, 0]
    expected = comps.cc_projection(torch.cat([den.image_embed, torch.tensor([[0.0, 0.0, 1.0, 0.0]])], -1))
    assert torch.allclose(den.context(at_ref)[:, 0], expected, atol=1e-6)
    z = torch.randn(1, 4, 32, 32)
    t = torch.tensor([500])
    e_ref, e_side = den.predict_noise(z, t, at_ref), den.predict_noise(z, t, side)
    assert e_ref.shape == z.shape and not torch.allclose(e_ref, e_side)
    # classifier-free guidance at 3: ε_u + 3 (ε_c - ε_u), the unconditional branch zeroing both
    # the image embedding (context projected from zeros) and the reference latent
    ctx = den.context(side)
    cond = comps.unet(torch.cat([z, den.ref_latent.expand(1, -1, -1, -1)], 1), t, encoder_hidden_states=ctx).sample
    unc = comps.unet(torch.cat([z, torch.zeros_like(den.ref_latent)], 1), t,
                     encoder_hidden_states=torch.zeros_like(ctx)).sample
    assert torch.allclose(e_side, unc + 3.0 * (cond - unc), atol=1e-5)


def test_zero123_of_another_size_is_refused(tmp_path):
    """Zero-1-to-3 was trained at 256² (its sd-objaverse-finetune-c_concat-256.yaml): a model
    whose configs give another size (here 512²: sample_size 64 on its f8 VAE) is refused with
    the sizes named, before any guidance runs."""
    import json

    import pytest

    from backend.errors import ModelNotAvailable

    build_tiny(tmp_path, ["zero123"])
    config = tmp_path / "zero123" / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "sample_size": 64}))
    with pytest.raises(ModelNotAvailable, match=r"512².*sample_size 64.*trained at 256²"):
        ModelStore(str(tmp_path)).get("zero123")
