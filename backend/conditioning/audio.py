"""Audio prompts in ImageBind's input form, in plain torch (no torchaudio).

read_audio: WAV/FLAC/OGG via soundfile -> mono float32 at 16 kHz (polyphase resampling).
kaldi_fbank: Kaldi-compatible log-mel filterbank (25 ms Hann-family "hanning" window, 10 ms
shift, pre-emphasis 0.97, DC removal, power spectrum on a 512-point FFT, 128 mel bins
from 20 Hz to Nyquist, no dither), as ImageBind computes it with torchaudio.
audio_clips: 3 clips of 2 s spread over the file, each a normalised [1,128,204] fbank.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 16_000
MEL_BINS = 128
TARGET_FRAMES = 204
FBANK_MEAN, FBANK_STD = -4.268, 9.138  # ImageBind's AudioSet statistics


class AudioError(ValueError):
    pass


def read_audio(path: str | Path) -> torch.Tensor:
    """-> [N] mono waveform at 16 kHz in [-1, 1]."""
    import soundfile as sf
    from scipy.signal import resample_poly

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError for bad files
        raise AudioError(f"could not read {Path(path).name} as audio ({exc}); use WAV, FLAC or OGG") from exc
    mono = data.mean(axis=1)
    if mono.size == 0:
        raise AudioError(f"{Path(path).name} contains no samples")
    if rate != SAMPLE_RATE:
        frac = Fraction(SAMPLE_RATE, rate).limit_denominator(1000)
        mono = resample_poly(mono, frac.numerator, frac.denominator).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(mono))


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(freq / 700.0)


def mel_filterbank(num_bins: int, fft_size: int, sample_rate: int, low: float = 20.0,
                   high: float | None = None) -> torch.Tensor:
    """Kaldi's triangular filters on the mel scale: [num_bins, fft_size // 2]."""
    high = sample_rate / 2 if high is None else high
    mel_lo, mel_hi = _mel(torch.tensor(low)), _mel(torch.tensor(high))
    delta = (mel_hi - mel_lo) / (num_bins + 1)
    centers = mel_lo + delta * torch.arange(num_bins + 2, dtype=torch.float64)
    fft_mel = _mel(torch.arange(fft_size // 2, dtype=torch.float64) * sample_rate / fft_size)
    left, center, right = centers[:-2, None], centers[1:-1, None], centers[2:, None]
    up = (fft_mel[None] - left) / (center - left)
    down = (right - fft_mel[None]) / (right - center)
    return torch.clamp(torch.minimum(up, down), min=0).float()


def kaldi_fbank(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, num_bins: int = MEL_BINS,
                frame_ms: float = 25.0, shift_ms: float = 10.0) -> torch.Tensor:
    """[N] waveform -> [frames, num_bins] log mel energies."""
    length, shift = int(sample_rate * frame_ms / 1000), int(sample_rate * shift_ms / 1000)
    if wave.numel() < length:
        wave = torch.nn.functional.pad(wave, (0, length - wave.numel()))
    frames = wave.unfold(0, length, shift).double()  # [F, length]
    frames = frames - frames.mean(dim=1, keepdim=True)  # remove DC offset
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - 0.97 * prev  # pre-emphasis
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(length, dtype=torch.float64) / (length - 1))
    fft_size = 1 << (length - 1).bit_length()
    spec = torch.fft.rfft(frames * window, n=fft_size).abs() ** 2  # [F, fft/2 + 1]
    mel = spec[:, : fft_size // 2].float() @ mel_filterbank(num_bins, fft_size, sample_rate).T
    return torch.log(mel.clamp(min=torch.finfo(torch.float32).eps))


def audio_clips(wave: torch.Tensor, clips: int = 3, seconds: float = 2.0) -> torch.Tensor:
    """-> [clips, 1, 128, 204] normalised fbanks of evenly spaced clips (shorter files are
    zero-padded in time)."""
    clip_len = int(seconds * SAMPLE_RATE)
    if wave.numel() < clip_len:
        wave = torch.nn.functional.pad(wave, (0, clip_len - wave.numel()))
    starts = torch.linspace(0, wave.numel() - clip_len, clips).long()
    out = []
    for s in starts.tolist():
        fb = kaldi_fbank(wave[s:s + clip_len]).T  # [128, frames]
        pad = TARGET_FRAMES - fb.shape[1]
        fb = torch.nn.functional.pad(fb, (0, pad)) if pad > 0 else fb[:, :TARGET_FRAMES]
        out.append(((fb - FBANK_MEAN) / (2 * FBANK_STD))[None])
    return torch.stack(out)
