"""Decode, downmix, resample and cut recordings into fixed-length clip windows.

Decoding is libsndfile's (via soundfile): WAV in every PCM/float/A-law/µ-law flavour, FLAC, OGG/Vorbis, MP3.
Resampling is torchaudio's windowed-sinc kernel, built once per (source rate, target rate) pair.
"""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

__all__ = [
    "SILENCE_DEVIATION",
    "AudioError",
    "fit_length",
    "load_audio",
    "load_mono",
    "resample",
    "window_starts",
    "windows",
]

# A recording is silent when no sample departs from its mean by more than this (full scale 1.0): -100 dBFS, a third
# of one 16-bit quantisation step (2**-15 = 3.1e-5, -90 dBFS), so a 16-bit file passes as soon as one sample differs
# from the rest, and field recordings, whose background and self-noise alone lie far above it, are never caught.
# What it does catch (a constant DC level, amplitudes like 1e-30, a one-sample file that wrap padding turns into a
# constant) gives windows whose MFCCs all sit at the log floor: training data with no call in it.
SILENCE_DEVIATION = 1e-5


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
    ``not_audio`` (not a regular file, or libsndfile does not recognise it), ``zero_length`` (a valid header with
    no samples), ``unreadable`` (recognised but corrupt), ``non_finite`` (NaN/inf samples, possible in float WAV),
    ``silent`` (no sample departs from the recording's mean by more than :data:`SILENCE_DEVIATION`: digital
    silence, a constant DC level, a single sample, amplitudes like 1e-30), ``broken_link`` (a symbolic link to
    nothing) or ``link_loop`` (a symbolic link that leads back to itself).
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise _link_error(path)
    if not path.exists():
        raise AudioError(path, "missing", "no such file")
    if not path.is_file():  # read as audio, a pipe or device would block or never end
        raise AudioError(path, "not_audio", "not a regular file (a folder, pipe or device)")
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
    _check_not_silent(path, data)
    return np.ascontiguousarray(data.T), int(sr)


def _check_not_silent(path: Path, data: np.ndarray) -> None:
    """Raise ``silent`` when no sample of any channel departs from that channel's mean by more than
    :data:`SILENCE_DEVIATION`; the detail gives the largest departure."""
    mean = data.mean(axis=0, dtype=np.float64)
    # the largest departure from the mean is at the maximum or the minimum: no copy of a long recording needed
    peak = float(np.max(np.maximum(data.max(axis=0) - mean, mean - data.min(axis=0))))
    if peak <= SILENCE_DEVIATION:
        level = "no departure" if peak == 0 else f"{20 * np.log10(peak):.0f} dBFS"
        raise AudioError(
            path,
            "silent",
            f"largest departure from the mean {peak:.3g} ({level}) in {data.shape[0]} sample(s); "
            f"a recording needs more than {SILENCE_DEVIATION:g}",
        )


def _link_error(path: Path) -> AudioError:
    """The reason a symbolic link leads to no file: a loop, or a target that does not exist."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return AudioError(path, "link_loop", "a symbolic link that leads back to itself")
    return AudioError(path, "broken_link", f"a symbolic link to {os.path.realpath(path)}, which does not exist")


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
