"""Audio prompts in ImageBind's input form, following upstream `imagebind/data.py`
(torchaudio load + resample, pytorchvideo clip sampler, torchaudio's Kaldi fbank) in plain
torch, without torchaudio.

read_audio: WAV/FLAC/OGG via soundfile -> [channels, N] at 16 kHz; only channel 0 reaches
    the fbank (torchaudio's Kaldi fbank reads channel 0), upstream never mixes channels.
resample: torchaudio.functional.resample's default (Hann-windowed sinc, 6 zero crossings,
    roll-off 0.99).
kaldi_fbank: Kaldi-compatible log-mel filterbank (25 ms "hanning" window, 10 ms shift,
    pre-emphasis 0.97, DC removal per frame, power spectrum on a 512-point FFT, 128 mel
    bins from 20 Hz to Nyquist, no dither).
audio_clips: 3 clips of 2 s placed as ImageBind's pinned pytorchvideo commit's
    ConstantClipsPerVideoSampler places them (clip_bounds: the first at the start, the last
    ending at the file's end; not PyPI's 0.1.5, which predates that fix); each clip's fbank zero-padded (or cut) to 204 frames, then normalised by
    ImageBind's AudioSet statistics: (fbank - mean) / std. Upstream subtracts each clip's
    mean (over all channels) in place from the shared waveform, so a later clip that
    overlaps an earlier one sees a step of the earlier clip's mean where that one ended;
    this is reproduced, as ImageBind's users get it (up to 0.02 on the normalised fbank).
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
FRAME_MS, SHIFT_MS = 25.0, 10.0
FBANK_MEAN, FBANK_STD = -4.268, 9.138  # ImageBind's AudioSet statistics
CLIPS, CLIP_SECONDS = 3, 2


class AudioError(ValueError):
    pass


def resample(wave: torch.Tensor, orig: int, new: int, zero_crossings: int = 6, rolloff: float = 0.99) -> torch.Tensor:
    """[..., N] -> [..., ceil(N new / orig)] by a Hann-windowed sinc low-pass at rolloff x the lower
    Nyquist, evaluated at each output instant (torchaudio's "sinc_interp_hann" default)."""
    if orig == new:
        return wave
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    cutoff = min(orig, new) * rolloff
    width = math.ceil(zero_crossings * orig / cutoff)  # kernel half-width in input samples
    taps = torch.arange(-width, width + orig, dtype=torch.float64)[None] / orig
    t = (-torch.arange(new, dtype=torch.float64)[:, None] / new + taps) * cutoff  # [new, taps]
    t = t.clamp(-zero_crossings, zero_crossings)
    window = torch.cos(t * math.pi / zero_crossings / 2) ** 2
    t = t * math.pi
    kernels = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t) * window * (cutoff / orig)
    flat = wave.reshape(-1, wave.shape[-1])
    x = torch.nn.functional.pad(flat.double()[:, None], (width, width + orig))
    out = torch.nn.functional.conv1d(x, kernels[:, None], stride=orig)  # [W, new, frames]
    length = math.ceil(new * wave.shape[-1] / orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)[:, :length]
    return out.reshape(*wave.shape[:-1], length).to(wave.dtype)


def read_audio(path: str | Path) -> torch.Tensor:
    """-> [channels, N] at 16 kHz in [-1, 1]; AudioError for a file without usable samples
    (none, under one 25 ms frame, NaN or infinite ones)."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError for bad files
        raise AudioError(f"could not read {Path(path).name} as audio ({exc}); use WAV, FLAC or OGG") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{Path(path).name} contains no samples")
    bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
    if bad.size:  # a float file can store them; the filterbank would carry them into C_m
        raise AudioError(f"{Path(path).name} has {bad.size} samples that are NaN or infinite (the first at "
                         f"{bad[0] / rate:.3f} s): re-export the audio")
    wave = resample(torch.from_numpy(np.ascontiguousarray(data.T)), rate, SAMPLE_RATE)
    if wave.shape[1] < int(SAMPLE_RATE * FRAME_MS / 1000):
        raise AudioError(f"{Path(path).name} lasts {1000 * data.shape[0] / rate:.0f} ms: give at least "
                         f"{FRAME_MS:.0f} ms of sound")
    return wave


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


def kaldi_fbank(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, num_bins: int = MEL_BINS) -> torch.Tensor:
    """[N >= one frame] waveform -> [1 + (N - frame) // shift, num_bins] log mel energies."""
    length, shift = int(sample_rate * FRAME_MS / 1000), int(sample_rate * SHIFT_MS / 1000)
    # float32 throughout, as torchaudio computes it: the weakest mel bins sit near float32
    # rounding of the FFT, and matching upstream there matters more than extra precision.
    frames = wave.unfold(0, length, shift).float()  # [F, length]; frames past the end are dropped
    frames = frames - frames.mean(dim=1, keepdim=True)  # remove DC offset
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - 0.97 * prev  # pre-emphasis
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(length, dtype=torch.float64) / (length - 1)).float()
    fft_size = 1 << (length - 1).bit_length()
    spec = torch.fft.rfft(frames * window, n=fft_size).abs() ** 2  # [F, fft/2 + 1]
    mel = spec[:, : fft_size // 2] @ mel_filterbank(num_bins, fft_size, sample_rate).T
    return torch.log(mel.clamp(min=torch.finfo(torch.float32).eps))


def clip_bounds(samples: int, clips: int = CLIPS, seconds: int = CLIP_SECONDS) -> list[tuple[int, int]]:
    """Sample ranges of the clips as ImageBind runs them, read through upstream's
    int(t * rate) slicing.

    ImageBind's requirements.txt pins pytorchvideo at a git commit (28fe037d until
    2025-02, 6cdc9293 since; both contain pytorchvideo's 2022-04 "Bug fix in Constant clip
    sampler", 9368f30), where ConstantClipsPerVideoSampler starts clip i at
    i * max(duration - seconds, 0) / max(clips - 1, 1), in exact fractions of the float
    duration: the last clip ends at the file's end. (The PyPI release 0.1.5 predates the
    fix and divides by `clips`.) A file shorter than a clip gives the whole file `clips`
    times."""
    duration = samples / SAMPLE_RATE
    latest = Fraction(max(duration - seconds, 0))
    spacing = latest / max(clips - 1, 1)
    return [(int(spacing * i * SAMPLE_RATE), int((spacing * i + seconds) * SAMPLE_RATE)) for i in range(clips)]


def audio_clips(wave: torch.Tensor, clips: int = CLIPS) -> torch.Tensor:
    """[channels, N] (or [N]) at 16 kHz -> [clips, 1, 128, 204] normalised fbanks."""
    work = wave.reshape(-1, wave.shape[-1]).clone()  # upstream's in-place mean removal, on a copy
    out = []
    for start, end in clip_bounds(work.shape[1], clips):
        clip = work[:, start:end]
        clip -= clip.mean()
        fb = kaldi_fbank(clip[0]).T  # [128, frames]
        pad = TARGET_FRAMES - fb.shape[1]
        # Upstream pads the fbank, not the waveform: a short clip's tail is fbank 0 (then normalised).
        fb = torch.nn.functional.pad(fb, (0, pad)) if pad > 0 else fb[:, :TARGET_FRAMES]
        out.append(((fb - FBANK_MEAN) / FBANK_STD)[None])
    return torch.stack(out)
