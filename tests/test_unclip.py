import pytest
import torch

from backend.guidance.base import SDS, TimestepSchedule
from backend.guidance.diffusion import SDDenoiser
from backend.models.store import ModelStore
from backend.models.tiny import build_tiny
from backend.render.shading import Frame
from backend.models.encoders import tiny_decoder


def test_unclip_conditions_on_image_embeds(tmp_path):
    build_tiny(tmp_path, ["unclip"])
    sd = ModelStore(str(tmp_path)).get("unclip")
    assert sd.prediction_type == "v_prediction" and sd.image_normalizer is not None
    c_m = torch.nn.functional.normalize(torch.randn(1, 32), dim=-1)
    a = SDDenoiser(sd, "", resolution=32, image_embeds=c_m)
    b = SDDenoiser(sd, "", resolution=32, image_embeds=-c_m)
    z, t = torch.randn(1, 4, 16, 16), torch.tensor([400])
    ua, ca = a.branches(z, t)
    ub, cb = b.branches(z, t)
    assert torch.allclose(ua, ub, atol=1e-6)  # unconditional: zero image embeds either way
    assert not torch.allclose(ca, cb, atol=1e-5)  # conditional follows C_m
    # the class labels are diffusers' StableUnCLIPPipeline.noise_image_embeddings with zero noise
    from types import SimpleNamespace

    from diffusers import StableUnCLIPPipeline

    from backend.guidance.diffusion import unclip_class_labels

    pipe = SimpleNamespace(image_normalizer=sd.image_normalizer, image_noising_scheduler=sd.image_noising_scheduler)
    for level in (0, 250):
        ref = StableUnCLIPPipeline.noise_image_embeddings(pipe, c_m, level, noise=torch.zeros_like(c_m))
        assert torch.allclose(unclip_class_labels(sd, c_m, level), ref, atol=1e-6)


@pytest.fixture(scope="module")
def unclip(tmp_path_factory):
    root = build_tiny(tmp_path_factory.mktemp("tiny"), ["unclip", "taesd"])
    store = ModelStore(str(root))
    sd = store.get("unclip")
    return root, store, SDDenoiser(sd, "", resolution=32, image_embeds=torch.ones(1, 32) / 32 ** 0.5)


def test_taesd_decodes_unet_latents_as_diffusers_pipelines_do(unclip):
    """A pipeline whose vae is an AutoencoderTiny decodes latents / scaling_factor and
    postprocesses to [0,1] (VaeImageProcessor); ModelStore.tiny_decoder is that path."""
    from diffusers import AutoencoderTiny
    from diffusers.image_processor import VaeImageProcessor

    root, store, _ = unclip
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * 2
    taesd = AutoencoderTiny.from_pretrained(root / "taesd")
    with torch.no_grad():
        ref = VaeImageProcessor().postprocess(taesd.decode(z / taesd.config.scaling_factor).sample, output_type="pt")
    got = tiny_decoder(store)(z)
    assert got.shape == (2, 3, 32, 32) and torch.allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("decoder", ["vae", "tiny"])
def test_image_term_is_eq5_on_renders_smaller_than_the_denoiser(unclip, decoder):
    """Aug-SDS's image term on renders smaller than the denoiser's resolution (standard: 128
    vs 768): x̂ decoded at 32² (by the VAE, or TAESD) and resized to the render's 24²,
    grad_x = w ω (x - x̂) / B."""
    _, store, den = unclip
    decode = tiny_decoder(store) if decoder == "tiny" else den.decode
    small = torch.rand(2, 24, 24, 3, requires_grad=True)
    schedule = TimestepSchedule(0.3, 0.5)
    torch.manual_seed(5)  # the VAE samples its latent from the global generator
    sds = SDS(den, schedule, "sds", 0.1, 3, decode if decoder == "tiny" else None)
    out = sds(Frame(small, torch.ones_like(small[..., :1])), None, 0, 1)
    out["sds_image"].backward()
    gen = torch.Generator().manual_seed(3)
    t = schedule.sample(2, 0, 1, 1000, gen)
    with torch.no_grad():
        torch.manual_seed(5)
        z = den.encode(small.detach())
        noise = torch.randn(z.shape, generator=gen)
        ac = den.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        z_t = ac.sqrt() * z + (1 - ac).sqrt() * noise
        eps = den.predict_noise(z_t, t, None)
        x_hat = decode((z_t - (1 - ac).sqrt() * eps) / ac.sqrt())
        x_hat = torch.nn.functional.interpolate(x_hat, (24, 24), mode="bilinear", align_corners=False, antialias=True)
    expected = (1 - ac) * 0.1 * (small.detach().permute(0, 3, 1, 2) - x_hat) / 2
    assert torch.allclose(small.grad, expected.permute(0, 2, 3, 1), atol=1e-5)
