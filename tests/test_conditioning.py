import math

import numpy as np
import pytest
import soundfile as sf
import torch

from backend.conditioning.audio import (AudioError, SAMPLE_RATE, audio_clips, kaldi_fbank, mel_filterbank,
                                        read_audio)


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def test_read_audio_mixes_to_mono_and_resamples(tmp_path):
    stereo = np.stack([_tone(440, 1.0, 44100), _tone(440, 1.0, 44100)], 1)
    sf.write(tmp_path / "a.wav", stereo, 44100)
    wave = read_audio(tmp_path / "a.wav")
    assert abs(wave.numel() - SAMPLE_RATE) <= 2 and wave.abs().max() <= 0.51
    (tmp_path / "bad.wav").write_bytes(b"RIFF nope")
    with pytest.raises(AudioError, match="could not read"):
        read_audio(tmp_path / "bad.wav")


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


def test_audio_clips_pads_short_files():
    clips = audio_clips(torch.from_numpy(_tone(300, 0.5, SAMPLE_RATE)))
    assert clips.shape == (3, 1, 128, 204)
