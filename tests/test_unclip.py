"""Stable unCLIP as its reference pipelines run it: the labels its UNet receives (the trained
all-zero null; C_m at the raw scale unCLIP was trained on) and its guided noise against
diffusers' StableUnCLIPImg2ImgPipeline on the same tiny weights (built from the published
configs: v-prediction, a 1024-d image normalizer, 2048-d class labels)."""
import numpy as np
import pytest
import torch

from backend.guidance.base import SDS, TimestepSchedule
from backend.guidance.diffusion import SDDenoiser
from backend.models.encoders import tiny_decoder
from backend.models.store import ModelStore
from backend.models.tiny import build_tiny
from backend.render.shading import Frame

from .helpers import assert_first_ddim_step, forward_kwarg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = build_tiny(tmp_path_factory.mktemp("tiny"), ["unclip", "taesd", "imagebind"])
    return root, ModelStore(str(root))


def test_an_image_prompt_reaches_unclip_raw_and_its_null_is_all_zero(tiny, tmp_path):
    """Through the job's own conditioning: an image-only prompt gives the UNet's conditional
    rows ImageBind's raw image embedding (noised at level 0 without noise, as diffusers'
    noise_image_embeddings computes it, then the level-0 timestep embedding), and the
    unconditional rows the all-zero 2048-d vector unCLIP was trained to drop to
    (Stability-AI/stablediffusion ddpm.py ImageEmbeddingConditionedLatentDiffusion, sampler
    adm_uc = zeros_like(adm_cond); diffusers _encode_image: zeros_like)."""
    from PIL import Image
    from diffusers import StableUnCLIPImg2ImgPipeline
    from types import SimpleNamespace

    from backend.conditioning.embedding import image_tensor
    from backend.job import parse_job
    from backend.pipeline.job_conditioning import JobConditioning

    _, store = tiny
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), np.uint8)).save(tmp_path / "ref.png")
    cond = JobConditioning(parse_job({"prompt": {"images": [str(tmp_path / "ref.png")]}}), store, lambda m: None)
    den = cond.unclip().with_scale(4.0)
    z, t = torch.randn(2, 4, 16, 16), torch.tensor([400, 400])
    labels = forward_kwarg(den.sd.unet, "class_labels", lambda: den.predict_noise(z, t, None))
    assert labels.shape == (4, 2048)
    uncond, conditional = labels[:2], labels[2:]
    assert torch.equal(uncond, torch.zeros_like(uncond))
    model, _ = store.get("imagebind")
    raw = model.embed("vision", image_tensor(str(tmp_path / "ref.png"), model.cfg.image_size), normalize=False)
    pipe = SimpleNamespace(image_normalizer=den.sd.image_normalizer, image_noising_scheduler=den.sd.image_noising_scheduler)
    expected = StableUnCLIPImg2ImgPipeline.noise_image_embeddings(pipe, raw, 0, noise=torch.zeros_like(raw))
    assert torch.allclose(conditional, expected.expand(2, -1), atol=1e-5)
    # level 0 scales the embedding by √ᾱ_0 of the squaredcos schedule (0.99999...): the raw one
    assert torch.allclose(conditional[0, :1024], raw[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_guided_noise_matches_diffusers_stable_unclip_pipeline(tiny, scale):
    """StableUnCLIPImg2ImgPipeline given the same raw image_embeds (noise_level 0; its
    level-0 noising given zero noise, ours deterministic), text and latents: its first DDIM
    step equals one DDIM step with our guided noise (v-prediction converted)."""
    from diffusers import DDIMScheduler, StableUnCLIPImg2ImgPipeline
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    root, store = tiny
    sd = store.get("unclip")
    scheduler = DDIMScheduler.from_pretrained(root / "unclip" / "scheduler")
    tower = CLIPVisionModelWithProjection.from_pretrained(root / "unclip" / "image_encoder")  # read for its dtype only
    pipe = StableUnCLIPImg2ImgPipeline(feature_extractor=CLIPImageProcessor(), image_encoder=tower,
                                       image_normalizer=sd.image_normalizer,
                                       image_noising_scheduler=sd.image_noising_scheduler, tokenizer=sd.tokenizer,
                                       text_encoder=sd.text_encoder, unet=sd.unet, scheduler=scheduler, vae=sd.vae)
    plain = pipe.noise_image_embeddings
    pipe.noise_image_embeddings = lambda image_embeds, noise_level, noise=None, generator=None: plain(
        image_embeds, noise_level, noise=torch.zeros_like(image_embeds))
    raw = torch.randn(1, 1024, generator=torch.Generator().manual_seed(1)) * 0.8
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    seen = {}

    def first_step(i: int, t: torch.Tensor, step_latents: torch.Tensor) -> None:  # this pipeline's old-style callback
        seen.setdefault("t", int(t))
        seen.setdefault("latents", step_latents.clone())

    pipe(prompt="a robot", image_embeds=raw, noise_level=0, height=32, width=32, num_inference_steps=2,
         guidance_scale=scale, latents=latents.clone(), output_type="latent", callback=first_step)
    den = SDDenoiser(sd, "a robot", guidance_scale=scale, resolution=32, image_embeds=raw)
    assert_first_ddim_step(scheduler, seen, latents, den.predict_noise(latents, torch.tensor([seen["t"]]), None))


def test_taesd_decodes_unet_latents_as_diffusers_pipelines_do(tiny):
    """A pipeline whose vae is an AutoencoderTiny decodes latents / scaling_factor and
    postprocesses to [0,1] (VaeImageProcessor); encoders.tiny_decoder is that path, with the
    scaling factor read from madebyollin/taesd's published config (1.0)."""
    from diffusers import AutoencoderTiny
    from diffusers.image_processor import VaeImageProcessor

    root, store = tiny
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * 2
    taesd = AutoencoderTiny.from_pretrained(root / "taesd")
    assert taesd.config.scaling_factor == 1.0
    with torch.no_grad():
        ref = VaeImageProcessor().postprocess(taesd.decode(z / taesd.config.scaling_factor).sample, output_type="pt")
    got = tiny_decoder(store)(z)
    assert got.shape == (2, 3, 32, 32) and torch.allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("decoder", ["vae", "tiny"])
def test_image_term_is_eq5_at_the_denoisers_resolution(tiny, decoder):
    """Aug-SDS's image term on renders smaller than the denoiser's resolution (standard: 128
    vs 512): the render bilinearly resized to the denoiser's 32² (x, what it encodes), x̂
    decoded there (by the VAE or TAESD), grad_x = w ω √ᾱ/√(1-ᾱ) (x - x̂) / B, carried back
    to the 24² render through the resize, as threestudio's compute_grad_sds does."""
    _, store = tiny
    den = SDDenoiser(store.get("unclip"), "", resolution=32, image_embeds=torch.ones(1, 1024) / 32)
    decode = tiny_decoder(store) if decoder == "tiny" else den.decode
    small = torch.rand(2, 24, 24, 3, requires_grad=True)
    schedule = TimestepSchedule(0.3, 0.5)
    sds = SDS(den, schedule, "sds", 0.1, 3, decode if decoder == "tiny" else None)
    sds(Frame(small, torch.ones_like(small[..., :1])), None, 0, 1)["sds_image"].backward()
    gen = torch.Generator().manual_seed(3)
    probe = small.detach().clone().requires_grad_()
    x = den.model_input(probe)
    with torch.no_grad():
        z = den.encode(x, gen)  # the same draws in the same order: the encoder's sample, t, noise
        t = schedule.sample(2, 0, 1, 1000, gen)
        noise = torch.randn(z.shape, generator=gen)
        ac = den.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        z_t = ac.sqrt() * z + (1 - ac).sqrt() * noise
        eps = den.predict_noise(z_t, t, None)
        x_hat = decode((z_t - (1 - ac).sqrt() * eps) / ac.sqrt())
    grad_x = (1 - ac) * 0.1 * (ac / (1 - ac)).sqrt() * (x.detach() - x_hat) / 2
    x.backward(grad_x)
    assert torch.allclose(small.grad, probe.grad, atol=1e-6) and probe.grad.abs().max() > 0
