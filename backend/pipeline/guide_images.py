"""Images the guidance is made from when the job does not give them: the reference view
x_r synthesised by Stable unCLIP from C_m (XBind: the any-modality path), and the
self-guidance image synthesised by SD 1.5 from the text (TV-3DG's visual prompt when no
style image is given). Both by plain DDIM with classifier-free guidance, at the scale and
step count of the diffusers pipeline each model is published for."""
from __future__ import annotations

import torch

from ..conditioning.image import Segmenter, foreground_mask, recentre
from ..guidance.diffusion import SDDenoiser
from ..guidance.sampling import ddim_generate
from .seeds import stream

# StableUnCLIPImg2ImgPipeline's defaults (guidance_scale 10, num_inference_steps 20) and
# StableDiffusionPipeline's (7.5, 50), diffusers 0.42.1.
REFERENCE_GUIDANCE, REFERENCE_STEPS = 10.0, 20
SELF_GUIDANCE, SELF_STEPS = 7.5, 50
REFERENCE_SIZE = 256  # x_r's side (Zero-1-to-3's input size)


def _latent_shape(den: SDDenoiser) -> tuple[int, int, int, int]:
    f = 2 ** (len(den.sd.vae.config.block_out_channels) - 1)
    return (1, 4, den.resolution // f, den.resolution // f)


def synthesise_reference(unclip: SDDenoiser, segmenter: Segmenter, seed: int) -> torch.Tensor:
    """-> [256,256,4] x_r with its foreground mask in alpha, recentred as Zero-1-to-3 expects;
    seed: the job's (the synthesis draws from its own stream of it, pipeline/seeds.py)."""
    image = ddim_generate(unclip.with_scale(REFERENCE_GUIDANCE), _latent_shape(unclip), unclip.sd.unet.device,
                          REFERENCE_STEPS, stream(seed, "reference"))[0].cpu()
    rgba = torch.cat([image, torch.ones_like(image[..., :1])], -1)
    return recentre(rgba, foreground_mask(rgba, segmenter), REFERENCE_SIZE)


def synthesise_self_guidance(sd, text: str, resolution: int, seed: int) -> torch.Tensor:  # noqa: ANN001
    """-> [H,W,3] in [0,1]: SD's image of the text; seed: the job's (its own stream of it)."""
    plain = SDDenoiser(sd, text, guidance_scale=SELF_GUIDANCE, resolution=resolution, visual_prompt=None)
    return ddim_generate(plain, _latent_shape(plain), sd.unet.device, SELF_STEPS, stream(seed, "self_guidance"))[0].cpu()
