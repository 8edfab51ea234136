"""Images reach each network as its own image processor prepares them: the processor
configs as published (backend/models/published/, where each was read: SOURCES.md), the
transformers PIL-backend classes they name as the reference (the processors the models
were published with; transformers 5's default classes need torchvision, which this
environment does not carry)."""
import numpy as np
import pytest
import torch
from PIL import Image

from backend.models.layouts import published
from backend.models.processing import ImageProcessing, processor_class
from backend.models.roles import network

from .helpers import forward_kwarg

PUBLISHED = [
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "feature_extractor/preprocessor_config.json"),
    ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "preprocessor_config.json"),
    ("openai/clip-vit-large-patch14", "preprocessor_config.json"),
    ("facebook/dino-vitb16", "preprocessor_config.json"),
    ("CIDAS/clipseg-rd64-refined", "preprocessor_config.json"),
]
# Not published as files: the processors built from class defaults (diffusers' IP-Adapter
# loader; DPTImageProcessor's own defaults, Intel/dpt-hybrid-midas's file unread).
DEFAULTS = [{"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 224},
             "crop_size": {"height": 224, "width": 224}},
            {"image_processor_type": "DPTImageProcessor"},
            {"image_processor_type": "DPTImageProcessor", "keep_aspect_ratio": True, "ensure_multiple_of": 32}]
CONFIGS = [published(repo, path) for repo, path in PUBLISHED] + DEFAULTS


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth 8-bit picture (sums of low-frequency waves), as natural images are."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.01, 0.08, 2).tolist() + [rng.uniform(0, 6)]
        channels.append(127 + 90 * np.sin(fx * x + phase) * np.cos(fy * y) + 20 * np.sin(0.003 * x * y))
    return np.clip(np.stack(channels, -1), 0, 255).round().astype(np.uint8)


def test_published_values_are_what_the_networks_take():
    """The values that were wrong before (DINO's statistics and filter, CLIPSeg's 352²) as
    their published files give them."""
    dino = ImageProcessing(published("facebook/dino-vitb16", "preprocessor_config.json"))
    assert dino.resample == 2 and dino.crop is None and dino.output_size(300, 200) == (224, 224)
    assert torch.allclose(dino.mean.flatten(), torch.tensor([0.5] * 3)) and torch.allclose(dino.std.flatten(),
                                                                                             torch.tensor([0.5] * 3))
    seg = ImageProcessing(published("CIDAS/clipseg-rd64-refined", "preprocessor_config.json"))
    assert seg.output_size(300, 200) == (352, 352) and seg.resample == 2
    clip = ImageProcessing(published("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "preprocessor_config.json"))
    assert clip.resample == 3 and clip.crop == (224, 224) and clip.output_size(300, 200) == (336, 224)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.get("feature_extractor_type") or c["image_processor_type"])
@pytest.mark.parametrize("shape", [(300, 200), (61, 47), (200, 301)])
def test_torch_path_matches_the_processor(config, shape):
    """Renders take the processor's geometry in torch: the same output size and crop, and
    the same values but for the processor's 8-bit arithmetic. torch's antialiased kernels
    are PIL's filters, and PIL rounds to 8 bits after its horizontal pass and again after the
    vertical one: the first rounding (at most half a level) passes through the vertical
    weights, so the bound is 0.5 + 0.5 max Σ|w| levels, with Σ|w| at most 1 for the bilinear
    filter and 1.25 for PIL's bicubic (Keys, a = -0.5: 2 (0.5625 + 0.0625) at half-pixel
    offsets)."""
    image = _photo(*shape, seed=sum(shape))
    ref = processor_class(config).from_dict(config)(images=[Image.fromarray(image)])["pixel_values"][0]
    proc = ImageProcessing(config)
    ours = proc(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)[0]
    assert ours.shape == tuple(ref.shape)
    level = (proc.scale / 255 / proc.std.flatten()).reshape(3, 1, 1)  # one 8-bit level, normalised
    err = ((ours - torch.from_numpy(np.asarray(ref))) / level).abs()
    weights = 1.25 if proc.resample == 3 else 1.0
    assert float(err.max()) <= 0.5 + 0.5 * weights + 1e-3
    assert float((err > 0.5).float().mean()) < 0.35  # most pixels land on the same level


def test_processor_types_are_the_pil_backends():
    assert processor_class({"feature_extractor_type": "CLIPFeatureExtractor"}).__name__ == "CLIPImageProcessorPil"
    assert processor_class({"image_processor_type": "ViTImageProcessorFast"}).__name__ == "ViTImageProcessorPil"
    with pytest.raises(ValueError, match="no PIL image processor"):
        processor_class({"image_processor_type": "NoSuchProcessor"})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from backend.models.store import ModelStore
    from backend.models.tiny import build_tiny

    root = build_tiny(tmp_path_factory.mktemp("tiny"), ["sd", "ip_adapter", "segmenter", "zero123", "depth"])
    return ModelStore(str(root))


@pytest.mark.parametrize("role", ["segmenter", "ip_adapter/image_encoder", "zero123/image_encoder", "depth"])
def test_conditioning_images_reach_the_network_exactly_as_its_processor_makes_them(store, role):
    """A non-square 8-bit picture: the pixels the network receives are, value for value,
    those of the processor the role's folder publishes (read here with transformers' own
    loader) given the same picture."""
    from backend.models import encoders

    image = _photo(45, 70, seed=3)
    x = torch.from_numpy(image).float() / 255
    base, path = role.split("/")[0], network(role).processor.path
    folder = store.location(base)
    if role == "segmenter":
        call = lambda: encoders.segmenter(store, "a chair")(x)  # noqa: E731
    elif role == "depth":
        call = lambda: encoders.depth(store)(x.permute(2, 0, 1)[None])  # noqa: E731
    else:
        call = lambda: encoders.clip_image_encoder(store, role, differentiable=False)(x.permute(2, 0, 1)[None])  # noqa: E731
    got = forward_kwarg(store.get(role), "pixel_values", call)
    if path is None:  # diffusers' IP-Adapter loader: CLIPImageProcessor at the tower's size
        side = store.get(role).config.image_size
        ref_proc = processor_class({"image_processor_type": "CLIPImageProcessor"})(size=side, crop_size=side)
    else:
        from pathlib import Path

        config_dir = Path(folder) / Path(path).parent
        ref_proc = processor_class(store.read_config(base, path)).from_pretrained(config_dir)
    ref = torch.from_numpy(np.stack(ref_proc(images=[Image.fromarray(image)])["pixel_values"]))
    assert got.shape == ref.shape and torch.equal(got.float(), ref.float())
