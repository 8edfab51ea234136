import math

import numpy as np
import pytest
import soundfile as sf
import torch

from backend.conditioning.audio import AudioError, SAMPLE_RATE, kaldi_fbank, mel_filterbank, read_audio


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def test_read_audio_keeps_channels_and_resamples(tmp_path):
    stereo = np.stack([_tone(440, 1.0, 44100), 0.5 * _tone(440, 1.0, 44100)], 1)
    sf.write(tmp_path / "a.wav", stereo, 44100, subtype="FLOAT")
    wave = read_audio(tmp_path / "a.wav")
    assert wave.shape == (2, SAMPLE_RATE)  # ceil(44100 * 160 / 441)
    # a 440 Hz tone keeps its amplitude through the low-pass (cut-off 0.99 x 8 kHz)
    assert abs(float(wave[0, 1000:-1000].abs().max()) - 0.5) < 0.01
    assert torch.allclose(wave[1], 0.5 * wave[0], atol=1e-6)
    (tmp_path / "bad.wav").write_bytes(b"RIFF nope")
    with pytest.raises(AudioError, match="could not read"):
        read_audio(tmp_path / "bad.wav")
    sf.write(tmp_path / "tiny.wav", _tone(440, 0.01, 16000), 16000)
    with pytest.raises(AudioError, match="at least 25 ms"):
        read_audio(tmp_path / "tiny.wav")


def test_fbank_shape_and_tone_peak():
    wave = torch.from_numpy(_tone(1000.0, 2.0, SAMPLE_RATE))
    fb = kaldi_fbank(wave)
    assert fb.shape == (1 + (32000 - 400) // 160, 128)
    # the loudest bin is the filter centred nearest 1 kHz
    centres = 700 * (torch.exp(torch.linspace(1127 * math.log1p(20 / 700), 1127 * math.log1p(8000 / 700), 130)[1:-1] / 1127) - 1)
    peak = int(fb.mean(0).argmax())
    assert abs(float(centres[peak]) - 1000) < 60
    silence = kaldi_fbank(torch.zeros(32000))
    assert torch.allclose(silence, torch.full_like(silence, math.log(torch.finfo(torch.float32).eps)))


def test_mel_filters_are_triangles_on_the_kaldi_mel_scale():
    fb = mel_filterbank(128, 512, SAMPLE_RATE)
    assert fb.shape == (128, 256) and fb.max() <= 1.0 + 1e-6
    # With 128 bins on a 512-point FFT the lowest filters are narrower than one FFT bin, so
    # Kaldi (and ImageBind through torchaudio) leaves a few of them empty; all others are not.
    empty = torch.nonzero(fb.sum(1) == 0).flatten()
    assert len(empty) <= 4 and (empty < 16).all()


def _disc_image(tmp_path, alpha: bool):
    from PIL import Image

    h = w = 64
    yy, xx = np.mgrid[:h, :w]
    inside = (yy - 20) ** 2 + (xx - 40) ** 2 < 10 ** 2
    rgb = np.full((h, w, 3), 240, np.uint8)
    rgb[inside] = [200, 30, 30]
    if alpha:
        a = np.where(inside, 255, 0).astype(np.uint8)
        Image.fromarray(np.dstack([rgb, a]), "RGBA").save(tmp_path / "a.png")
    else:
        Image.fromarray(rgb).save(tmp_path / "a.png")
    return tmp_path / "a.png", torch.from_numpy(inside)


@pytest.mark.parametrize("alpha", [True, False])
def test_reference_mask_and_recentring(tmp_path, alpha):
    from backend.conditioning.image import foreground_mask, load_image, prepare_reference

    path, inside = _disc_image(tmp_path, alpha)
    mask = foreground_mask(load_image(path))
    assert ((mask > 0.5) == inside).float().mean() > 0.99
    ref = prepare_reference(path, size=64)
    m = ref[..., 3] > 0.5
    ys, xs = torch.nonzero(m, as_tuple=True)
    assert abs(float(ys.float().mean()) - 31.5) < 1.5 and abs(float(xs.float().mean()) - 31.5) < 1.5
    assert abs((int(xs.max()) - int(xs.min()) + 1) - 0.8 * 64) <= 2
    assert torch.allclose(ref[m][:, :3].mean(0), torch.tensor([200, 30, 30]) / 255.0, atol=0.05)


def test_bad_images_are_reported(tmp_path):
    from PIL import Image

    from backend.conditioning.image import ImageInputError, load_image, prepare_reference

    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(ImageInputError, match="could not read"):
        load_image(tmp_path / "x.png")
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "plain.png")
    with pytest.raises(ImageInputError, match="no foreground"):
        prepare_reference(tmp_path / "plain.png")
