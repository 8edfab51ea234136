"""Our Stable Diffusion guidance against diffusers' own pipelines on the same tiny random
models: the pipeline's first DDIM step from given latents is compared with one DDIM step
taken with our noise prediction (classifier-free guidance, IP-Adapter, PAG), and our DDIM
inversion step with diffusers' DDIMInverseScheduler given the same model output."""
import pytest
import torch

from backend.guidance.csm import ddim_step
from backend.guidance.diffusion import SDDenoiser, set_ip_scale
from backend.models.store import ModelStore
from backend.models.tiny import build_tiny
from backend.models.encoders import ip_adapter

from .helpers import assert_first_ddim_step


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = build_tiny(tmp_path_factory.mktemp("tiny"), ["sd", "ip_adapter"])
    store = ModelStore(str(root))
    sd = store.get("sd")
    visual = ip_adapter(store, sd)(torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(2)))
    return root, sd, visual


@pytest.mark.parametrize("pag_scale", [0.0, 2.0])
def test_cfg_ip_adapter_and_pag_match_the_diffusers_pag_pipeline(tiny, pag_scale):
    from diffusers import DDIMScheduler, StableDiffusionPAGPipeline

    root, sd, visual = tiny
    scheduler = DDIMScheduler.from_pretrained(root / "sd" / "scheduler")
    pipe = StableDiffusionPAGPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer,
                                      unet=sd.unet, scheduler=scheduler, safety_checker=None,
                                      feature_extractor=None, image_encoder=None, requires_safety_checker=False,
                                      pag_applied_layers=["mid"])
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    seen = {}

    def first_step(_pipe, i, t, kwargs):  # noqa: ANN001, ANN202
        seen.setdefault("t", int(t))
        seen.setdefault("latents", kwargs["latents"].clone())
        return kwargs

    set_ip_scale(sd.unet, 0.5)
    pipe(prompt="a robot", negative_prompt="", height=32, width=32, num_inference_steps=2, guidance_scale=5.0,
         pag_scale=pag_scale, latents=latents.clone(), output_type="latent", callback_on_step_end=first_step,
         ip_adapter_image_embeds=[torch.cat([torch.zeros_like(visual), visual])[:, None]])
    den = SDDenoiser(sd, "a robot", guidance_scale=5.0, resolution=32, visual_prompt=visual, ip_scale=0.5)
    t = torch.tensor([seen["t"]])
    if pag_scale:
        eps_u, eps_c, eps_p = den.branches(latents, t, perturbed=True)
        eps = eps_u + 5.0 * (eps_c - eps_u) + pag_scale * (eps_c - eps_p)
    else:
        eps = den.predict_noise(latents, t, None)
    assert_first_ddim_step(scheduler, seen, latents, eps)


def test_ddim_inversion_step_matches_diffusers_inverse_scheduler(tiny):
    """The same update rule; we evaluate the noise at each step's start (ε(x_s, s)), which is
    the model output handed to both here."""
    from diffusers import DDIMInverseScheduler

    root, sd, _ = tiny
    inverse = DDIMInverseScheduler.from_pretrained(root / "sd" / "scheduler")
    inverse.set_timesteps(20)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    ours = x.clone()
    den = SDDenoiser(sd, "a robot", resolution=32)
    ac = inverse.alphas_cumprod
    step = inverse.config.num_train_timesteps // 20
    for t in inverse.timesteps[:5]:
        s = int(t) - step
        a_from = ac[s] if s >= 0 else inverse.initial_alpha_cumprod
        eps = den.uncond_noise(ours, torch.tensor([max(s, 0)]))
        x = inverse.step(eps, t, x).prev_sample
        ours = ddim_step(ours, eps, a_from, ac[int(t)])
        assert torch.allclose(ours, x, atol=1e-5), int(t)
