"""Every value the code takes from a model's published configuration is read from it, not
assumed: a tiny model whose config says otherwise is followed. The tiny models are the
vendored published configs scaled down (backend/models/published/, SOURCES.md), so they
also keep the classes, prediction types, schedules and embedding sizes of the real ones."""
import json
from pathlib import Path

import pytest
import torch

from backend.guidance.diffusion import SDDenoiser, sd_resolution
from backend.models.layouts import published
from backend.models.store import ModelStore
from backend.models.tiny import build_tiny


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"), ["sd", "unclip", "clip"])


def _edited(built: Path, tmp_path: Path, role: str, path: str, **changes: object) -> ModelStore:
    """A copy of the tiny role with one config file's keys changed."""
    import shutil

    shutil.copytree(built / role, tmp_path / role)
    config = tmp_path / role / path
    config.write_text(json.dumps({**json.loads(config.read_text()), **changes}))
    return ModelStore(str(tmp_path))


def test_the_tiny_models_keep_what_the_published_configs_say(built):
    store = ModelStore(str(built))
    sd, unclip = store.get("sd"), store.get("unclip")
    # SD 1.5's scheduler names no prediction type (diffusers' default, epsilon); unCLIP's says v
    assert "prediction_type" not in published("stable-diffusion-v1-5/stable-diffusion-v1-5",
                                              "scheduler/scheduler_config.json")
    assert sd.prediction_type == "epsilon" and unclip.prediction_type == "v_prediction"
    # unCLIP's labels: the 1024-d normalizer as published, so 2048-d with the level embedding
    assert unclip.image_normalizer.mean.shape[-1] == 1024 and unclip.unet.config.projection_class_embeddings_input_dim == 2048
    assert unclip.unet.config.class_embed_type == "projection"
    # the VAE's scaling factor: SD 1.5's config has none, so diffusers' default 0.18215
    assert sd.vae.config.scaling_factor == pytest.approx(0.18215)
    assert store.get("clip").config.projection_dim == 1024  # OpenCLIP ViT-H's image embedding


def test_the_noise_schedule_is_read_from_the_scheduler_config(built, tmp_path):
    from diffusers import DDIMScheduler

    store = _edited(built, tmp_path, "sd", "scheduler/scheduler_config.json", beta_end=0.02, beta_schedule="linear")
    expected = DDIMScheduler(beta_start=0.00085, beta_end=0.02, beta_schedule="linear").alphas_cumprod
    assert torch.allclose(store.get("sd").alphas_cumprod, expected)


def test_the_latent_scaling_is_read_from_the_vae_config(built, tmp_path):
    store = _edited(built, tmp_path, "sd", "vae/config.json", scaling_factor=0.5)
    sd = store.get("sd")
    plain = ModelStore(str(built)).get("sd")
    x = torch.rand(1, 3, 32, 32)
    ours = SDDenoiser(sd, "", resolution=32).encode(x)  # the posterior mean: no draw
    reference = SDDenoiser(plain, "", resolution=32).encode(x)
    assert torch.allclose(ours, reference * 0.5 / 0.18215, atol=1e-5)


def test_the_training_size_is_read_from_the_unet_and_vae_configs(built, tmp_path):
    assert sd_resolution(ModelStore(str(built)).get("sd")) == 32  # 16 latents x the 2-level VAE's 2
    store = _edited(built, tmp_path, "sd", "unet/config.json", sample_size=8)
    assert sd_resolution(store.get("sd")) == 16


def test_a_unet_without_projected_class_labels_is_plain_stable_diffusion(built, tmp_path):
    """unCLIP is recognised by its UNet's class_embed_type, not by its role's name."""
    store = _edited(built, tmp_path, "unclip", "unet/config.json", class_embed_type=None,
                    projection_class_embeddings_input_dim=None)
    assert store.get("unclip").image_normalizer is None


def test_image_statistics_are_read_from_the_processor_config(built, tmp_path):
    """The CLIP tower's input follows its preprocessor_config.json: other statistics give
    other pixel values, exactly (x - mean) / std with the file's numbers."""
    from backend.models.encoders import pixels

    store = _edited(built, tmp_path, "clip", "feature_extractor/preprocessor_config.json",
                    image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25])
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(pixels(store, "clip")(x), (x - 0.5) / 0.25, atol=1e-6)
