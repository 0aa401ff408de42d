"""Decode, downmix, resample and cut recordings into fixed-length clip windows.

Decoding is libsndfile's (via soundfile): WAV in every PCM/float/A-law/µ-law flavour, FLAC, OGG/Vorbis, MP3.
Resampling is torchaudio's windowed-sinc kernel, built once per (source rate, target rate) pair.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

__all__ = [
    "AudioError",
    "fit_length",
    "load_audio",
    "load_mono",
    "resample",
    "window_starts",
    "windows",
]


class AudioError(ValueError):
    """A recording that cannot be used; ``reason`` is a short machine-readable key (see :func:`load_audio`)."""

    def __init__(self, path: str | os.PathLike[str], reason: str, detail: str = "") -> None:
        # every field in args: the error crosses process boundaries (featurize's workers) by pickling
        super().__init__(str(path), reason, detail)
        self.path, self.reason, self.detail = str(path), reason, detail

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


def load_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Decode a file to float32 ``(channels, samples)`` in [-1, 1] and its sample rate.

    Raises :class:`AudioError` with the reason it cannot be used: ``missing``, ``empty`` (0 bytes),
    ``not_audio`` (libsndfile does not recognise it), ``zero_length`` (a valid header with no samples),
    ``unreadable`` (recognised but corrupt), ``non_finite`` (NaN/inf samples, possible in float WAV) or
    ``silent`` (every sample 0).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "missing", "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty", "0 bytes")
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(path, "not_audio", _first_line(exc)) from None
    if info.frames == 0:
        raise AudioError(path, "zero_length", f"{info.format} header with no samples")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(path, "unreadable", _first_line(exc)) from None
    if data.shape[0] == 0:
        raise AudioError(path, "zero_length", "no samples decoded")
    if not np.isfinite(data).all():
        raise AudioError(path, "non_finite", "NaN or infinite samples")
    if not np.any(data):
        raise AudioError(path, "silent", "every sample is 0")
    return np.ascontiguousarray(data.T), int(sr)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@functools.lru_cache(maxsize=16)
def _resampler(orig_sr: int, target_sr: int) -> torchaudio.transforms.Resample:
    # building the sinc kernel costs more than applying it to a short clip: keep one per rate pair
    return torchaudio.transforms.Resample(orig_sr, target_sr)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample along the last axis; a no-op when the rates match."""
    if orig_sr == target_sr:
        return wave
    with torch.no_grad():
        out = _resampler(int(orig_sr), int(target_sr))(torch.from_numpy(np.ascontiguousarray(wave)))
    return out.numpy()


def load_mono(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
    """Decode, downmix to mono (channel mean) and resample to ``sample_rate``: float32 ``(samples,)``."""
    data, sr = load_audio(path)
    return resample(data.mean(axis=0), sr, sample_rate).astype(np.float32, copy=False)


def fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    """Crop to ``n`` samples, or pad a shorter recording by repeating it (wrap padding).

    Repeating keeps the call's level and texture in the whole window, where zero padding would add digital
    silence that real clips never contain and that the MFCC log compresses to extreme values.
    """
    if wave.shape[-1] >= n:
        return wave[..., :n]
    reps = -(-n // max(wave.shape[-1], 1))
    return np.tile(wave, reps)[..., :n]


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Start offsets of the windows that cover a recording.

    A recording no longer than one window gives one (padded) window. Otherwise windows step by ``hop``, and a
    last window aligned to the recording's end is added when the hop leaves a tail uncovered, so no part of the
    recording is dropped.
    """
    if hop < 1 or window < 1:
        raise ValueError(f"window and hop must be >= 1, got window={window}, hop={hop}")
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def windows(wave: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Cut a mono recording into ``(n_windows, window)`` clips (see :func:`window_starts`)."""
    if wave.shape[-1] <= window:
        return fit_length(wave, window)[None, :]
    return np.stack([wave[s : s + window] for s in window_starts(wave.shape[-1], window, hop)])
