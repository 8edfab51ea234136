import pytest
import torch

from backend.models.imagebind import ImageBind, ImageBindConfig, load_imagebind
from tests.fixtures.imagebind_keys import HUGE_BLOCKS, HUGE_SHAPES, expected_keys

TINY = ImageBindConfig(out_dim=16, vision=(32, 2, 4), text=(32, 2, 4), audio=(24, 2, 4), depth=(16, 1, 4),
                       thermal=(16, 1, 4), imu=(16, 1, 4), vocab_size=100, image_size=28)


def test_huge_model_matches_the_official_key_layout():
    with torch.device("meta"):
        model = ImageBind(ImageBindConfig())
    state = model.state_dict()
    assert set(state) == expected_keys(HUGE_BLOCKS)
    for key, shape in HUGE_SHAPES.items():
        assert tuple(state[key].shape) == shape, key


def test_tiny_checkpoint_loads_strictly_and_embeds(tmp_path):
    model = ImageBind(TINY)
    assert set(model.state_dict()) == expected_keys({"vision": 2, "text": 2, "audio": 2, "depth": 1, "thermal": 1, "imu": 1})
    torch.save(model.state_dict(), tmp_path / "imagebind_huge.pth")
    TINY.save(tmp_path)
    loaded = load_imagebind(tmp_path)
    vision = loaded.embed("vision", torch.rand(2, 3, 28, 28))
    ids = torch.tensor([[98, 5, 7, 99] + [0] * 73])
    text = loaded.embed("text", ids)
    audio = loaded.embed("audio", torch.randn(1, 1, 1, 128, 204))  # one clip: exactly the scale 20
    assert vision.shape == (2, 16) and text.shape == (1, 16) and audio.shape == (1, 16)
    assert torch.allclose(vision.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(text.norm(dim=-1), torch.tensor([1 / 0.07]), rtol=1e-4)  # learnt scale at init
    assert torch.allclose(audio.norm(dim=-1), torch.tensor([20.0]), rtol=1e-4)
    # the causal mask: tokens after EOT do not change the text embedding
    ids2 = ids.clone()
    ids2[0, 10] = 42
    assert torch.allclose(loaded.embed("text", ids2), text, atol=1e-5)
    assert torch.allclose(loaded.embed("vision", torch.rand(2, 3, 28, 28)[:1]).norm(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(model.eval().embed("text", ids), text, atol=1e-6)  # same weights after the round trip
    three = loaded.embed("audio", torch.randn(2, 3, 1, 128, 204))  # clips averaged after the head
    assert three.shape == (2, 16) and (three.norm(dim=-1) <= 20.0 + 1e-4).all()


def test_modality_embedding_mixes_normalised_prompts_for_ms_and_raw_ones_for_unclip(tmp_path):
    """C_m in its two forms (conditioning/embedding.py): for the MS loss, unit vectors mixed and
    renormalised (audio's x20 does not dominate); for unCLIP, Anything2Image's bridge: raw
    vision and text embeddings (ImageBind's forward(..., normalize=False)), postprocessed audio
    (norm 20), a convex combination by the weights, not renormalised."""
    import numpy as np
    import soundfile as sf
    from PIL import Image

    from backend.conditioning.embedding import PromptError, image_tensor, modality_embedding
    from backend.job import Prompt, Weights
    from backend.conditioning.audio import audio_clips, read_audio
    from backend.models.store import ModelStore
    from backend.models.tiny import build_tiny

    build_tiny(tmp_path, ["imagebind"])
    model, tok = ModelStore(str(tmp_path)).get("imagebind")
    Image.fromarray(np.random.randint(0, 255, (40, 40, 3), np.uint8)).save(tmp_path / "r.png")
    Image.fromarray(np.random.randint(0, 255, (30, 50, 3), np.uint8)).save(tmp_path / "s.png")
    sf.write(tmp_path / "a.wav", np.random.randn(16000).astype(np.float32) * 0.1, 16000)
    wav, png = str(tmp_path / "a.wav"), str(tmp_path / "r.png")
    ids = tok(["a red chair"], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    raw_text = model.embed("text", ids, normalize=False)[0]
    raw_image = model.embed("vision", image_tensor(png, 28), normalize=False)[0]
    audio = model.embed("audio", audio_clips(read_audio(wav))[None])[0]
    unit = lambda v: torch.nn.functional.normalize(v, dim=0)  # noqa: E731
    text_only = modality_embedding(model, tok, Prompt(text="a red chair"))
    image_only = modality_embedding(model, tok, Prompt(images=(png,)))
    audio_only = modality_embedding(model, tok, Prompt(audio=wav))
    assert torch.allclose(image_only.unclip, raw_image, atol=1e-6)  # exactly ImageBind's raw image embedding
    assert torch.allclose(text_only.unclip, raw_text, atol=1e-6)
    assert torch.allclose(audio_only.unclip.norm(), torch.tensor(20.0), atol=1e-3)  # one clip: exactly the scale 20
    for e in (text_only, audio_only, image_only):
        assert abs(float(e.unit.norm()) - 1) < 1e-5
    both = modality_embedding(model, tok, Prompt(text="a red chair", audio=wav, weights=Weights(text=1.0, audio=3.0)))
    assert torch.allclose(both.unit, unit(unit(raw_text) + 3 * unit(audio)), atol=1e-5)
    assert torch.allclose(both.unclip, (raw_text + 3 * audio) / 4, atol=1e-5)
    two = modality_embedding(model, tok, Prompt(images=(png, str(tmp_path / "s.png"))))
    raw_second = model.embed("vision", image_tensor(str(tmp_path / "s.png"), 28), normalize=False)[0]
    assert torch.allclose(two.unclip, (raw_image + raw_second) / 2, atol=1e-6)  # several images: averaged raw
    only_text = modality_embedding(model, tok, Prompt(text="a red chair", audio=wav, weights=Weights(audio=0.0)))
    assert torch.allclose(only_text.unit, text_only.unit, atol=1e-6)
    assert torch.allclose(only_text.unclip, text_only.unclip, atol=1e-6)
    with pytest.raises(PromptError):
        modality_embedding(model, tok, Prompt())


def test_missing_imagebind_checkpoint_is_explained(tmp_path):
    from backend.errors import ModelNotAvailable
    from backend.models.store import ModelStore

    (tmp_path / "imagebind").mkdir()
    with pytest.raises(ModelNotAvailable, match="imagebind_huge.pth"):
        ModelStore(str(tmp_path)).get("imagebind")
