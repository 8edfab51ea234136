"""ImageBind's input preprocessing against upstream's own `imagebind/data.py`.

tests/fixtures/imagebind_preprocessing/reference.npz holds upstream's outputs for the files
inputs.py writes, made once by make_reference.py (its docstring gives the commands) with
ImageBind 53680b02, the pytorchvideo commit its requirements.txt pins (6cdc9293; the
earlier pin 28fe037d gives identical outputs) and real torchaudio 2.11.1 / torchvision 0.28. Audio: 1.3 s (shorter than a
clip), 3.33 s, 5 s at 48 kHz, 2.7 s stereo at 44.1 kHz. Images: square, larger, landscape,
portrait.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.conditioning.audio import SAMPLE_RATE, FBANK_MEAN, FBANK_STD, audio_clips, clip_bounds, read_audio
from backend.conditioning.embedding import CLIP_MEAN, CLIP_STD, image_tensor

FIXTURES = Path(__file__).parent / "fixtures" / "imagebind_preprocessing"
sys.path.insert(0, str(FIXTURES))
from inputs import AUDIO, IMAGES, write_inputs  # noqa: E402

AUDIO_STEP = 1e-4  # make_reference.py's int16 step


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def reference():
    return np.load(FIXTURES / "reference.npz")


@pytest.mark.parametrize("name", list(AUDIO))
def test_audio_clips_match_upstream(files, reference, name):
    ours = audio_clips(read_audio(files[name])).numpy()
    ref = reference[f"audio/{name}"].astype(np.float32) * AUDIO_STEP
    assert ours.shape == ref.shape == (3, 1, 128, 204)
    # float32 fbank and resampler rounding; the stored step adds at most 5e-5
    assert np.abs(ours - ref).max() < 3e-4


def test_clips_are_placed_as_the_pinned_pytorchvideo_places_them():
    # Known answer (pytorchvideo 9368f30, in ImageBind's pinned commits): clip i starts at
    # i (duration - 2) / (clips - 1), so a 5 s file's clips start at 0, 1.5 and 3 s and the
    # last ends at the file's end. PyPI's 0.1.5 divides by clips: 0, 1 and 2 s.
    assert clip_bounds(5 * SAMPLE_RATE) == [(0, 32000), (24000, 56000), (48000, 80000)]
    # 3.33 s: the latest start 1.33 s (a float duration, exact fractions, int() slicing)
    assert clip_bounds(53280) == [(0, 32000), (10640, 42640), (21280, 53280)]
    # shorter than a clip: the whole file three times
    assert clip_bounds(20800) == [(0, 32000)] * 3


def test_short_audio_pads_the_fbank_not_the_waveform(files, reference):
    ours = audio_clips(read_audio(files["short_1p3s_16k"]))
    frames = 1 + (int(1.3 * 16000) - 400) // 160
    # past the clip's own frames: fbank 0, normalised -> -mean / std (not log(eps) frames)
    assert torch.allclose(ours[..., frames:], torch.full_like(ours[..., frames:], -FBANK_MEAN / FBANK_STD))
    assert not torch.isclose(ours[..., frames - 1], torch.tensor(-FBANK_MEAN / FBANK_STD)).all()


@pytest.mark.parametrize("name", list(IMAGES))
def test_images_match_upstream(files, reference, name):
    ours = image_tensor(str(files[name]), 224)[0]
    crop = torch.from_numpy(reference[f"image/{name}"]).float() / 255
    ref = ((crop[None] - CLIP_MEAN) / CLIP_STD)[0]
    assert (ours - ref).abs().max() < 1e-5


def test_transparent_pixels_are_white_whatever_colour_hides_under_them(tmp_path):
    from PIL import Image

    rgba = np.zeros((256, 256, 4), np.uint8)  # black hidden under alpha 0
    rgba[64:192, 64:192] = [200, 30, 30, 255]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = image_tensor(str(tmp_path / "a.png"), 224)[0] * CLIP_STD[0] + CLIP_MEAN[0]
    assert torch.allclose(x[:, 0, 0], torch.ones(3), atol=1e-6)
    assert torch.allclose(x[:, 112, 112], torch.tensor([200, 30, 30]) / 255, atol=1e-6)
