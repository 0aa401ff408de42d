"""Decode, downmix, resample and cut recordings into fixed-length clip windows.

Decoding is libsndfile's (via soundfile): WAV in every PCM/float/A-law/µ-law flavour, FLAC, OGG/Vorbis, MP3.
Resampling is libsoxr's (via soxr), whose memory does not depend on the ratio of the rates: a polyphase kernel for
rates with no common factor (16,393 Hz to 48 kHz) took torchaudio's resampler past 24 GB.

:func:`stream_mono` and :func:`stream_windows` give a recording block by block and window by window, holding one
block and one window whatever the recording's length; :func:`load_mono` and :func:`windows` are the same samples
whole.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "SILENCE_DEVIATION",
    "AudioError",
    "fit_length",
    "load_audio",
    "load_mono",
    "resample",
    "resampled_length",
    "stream_mono",
    "stream_windows",
    "truncation",
    "window_starts",
    "windows",
]

BLOCK_FRAMES = 1 << 18  # frames decoded at a time when streaming: about 6 s at 44.1 kHz, 2 MB of stereo float32
RESAMPLE_QUALITY = "HQ"

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
    info = _audio_info(path)
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except _DECODE_ERRORS as exc:
        raise AudioError(path, "unreadable", _first_line(exc)) from None
    level = _Level(info.channels)
    level.add(path, data)
    level.check(path)
    return np.ascontiguousarray(data.T), int(sr)


_DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError)


def _audio_info(path: Path) -> sf._SoundFileInfo:
    """The file's header, after the reasons a path holds no audio at all (before any sample is read)."""
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
    return info


class _Level:
    """Each channel's running minimum, maximum and sum over ``(frames, channels)`` blocks: enough for the
    non-finite and silence rules of :func:`load_audio` without holding the recording."""

    def __init__(self, channels: int) -> None:
        self.lo = np.full(channels, np.inf)
        self.hi = np.full(channels, -np.inf)
        self.sum = np.zeros(channels)
        self.n = 0

    def add(self, path: Path, block: np.ndarray) -> None:
        if not np.isfinite(block).all():
            raise AudioError(path, "non_finite", "NaN or infinite samples")
        if len(block):
            self.lo = np.minimum(self.lo, block.min(axis=0))
            self.hi = np.maximum(self.hi, block.max(axis=0))
            self.sum += block.sum(axis=0, dtype=np.float64)
            self.n += len(block)

    def check(self, path: Path) -> None:
        """Raise ``zero_length`` when nothing decoded, ``silent`` when no sample of any channel departs from that
        channel's mean by more than :data:`SILENCE_DEVIATION`; the detail gives the largest departure."""
        if self.n == 0:
            raise AudioError(path, "zero_length", "no samples decoded")
        mean = self.sum / self.n
        # the largest departure from the mean is at the maximum or the minimum
        peak = float(np.max(np.maximum(self.hi - mean, mean - self.lo)))
        if peak <= SILENCE_DEVIATION:
            level = "no departure" if peak == 0 else f"{20 * np.log10(peak):.0f} dBFS"
            raise AudioError(
                path,
                "silent",
                f"largest departure from the mean {peak:.3g} ({level}) in {self.n} sample(s); "
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


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample ``(samples,)`` or ``(channels, samples)`` along the last axis; a no-op when the rates match."""
    if orig_sr == target_sr:
        return wave
    out = soxr.resample(np.ascontiguousarray(wave.T), int(orig_sr), int(target_sr), quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(out.T)


def resampled_length(n_samples: int, orig_sr: int, target_sr: int) -> int:
    """Samples :func:`resample` makes of ``n_samples``: libsoxr rounds ``n * target / orig`` to the nearest."""
    return (2 * n_samples * target_sr + orig_sr) // (2 * orig_sr)


def load_mono(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
    """Decode, downmix to mono (channel mean) and resample to ``sample_rate``: float32 ``(samples,)``."""
    return np.concatenate(list(stream_mono(path, sample_rate)))


def stream_mono(
    path: str | os.PathLike[str], sample_rate: int, block_frames: int | None = None
) -> Iterator[np.ndarray]:
    """:func:`load_mono`'s samples in blocks, decoded and resampled block by block with no seam at their edges
    (libsoxr's stream keeps the filter's state). The rules of :func:`load_audio` hold: a file that turns out
    unreadable, non-finite or silent raises :class:`AudioError` when that is known, silence at the end."""
    path, block_frames = Path(path), block_frames or BLOCK_FRAMES
    info = _audio_info(path)
    level = _Level(info.channels)
    stream = None
    if info.samplerate != sample_rate:
        stream = soxr.ResampleStream(info.samplerate, sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    with sf.SoundFile(path) as f:
        last, damage = False, None
        while not last:
            start = f.tell()  # frames decoded so far
            try:
                block = f.read(block_frames, dtype="float32", always_2d=True)
            except _DECODE_ERRORS as exc:
                block, damage = _salvage(f, start, block_frames), _first_line(exc)
            last = damage is not None or len(block) < block_frames
            level.add(path, block)
            mono = np.ascontiguousarray(block.mean(axis=1), dtype=np.float32)
            out = mono if stream is None else stream.resample_chunk(mono, last=last)
            if len(out):
                yield out
        if damage is not None:  # what decoded before the damage has been given; then the reason
            raise AudioError(path, "unreadable", f"{damage} after {(start + len(block)) / info.samplerate:.3f} s")
    level.check(path)


SALVAGE_FRAMES = 4096  # how finely a damaged block is re-read to keep what decodes before the damage


def _salvage(f: sf.SoundFile, start: int, block_frames: int) -> np.ndarray:
    """The frames of a block that decode before its damage (a FLAC cut midway loses sync somewhere inside a block):
    re-read from the block's start in small pieces until one fails."""
    f.seek(start)
    pieces: list[np.ndarray] = []
    while sum(len(p) for p in pieces) < block_frames:
        try:
            pieces.append(f.read(min(SALVAGE_FRAMES, block_frames - sum(len(p) for p in pieces)), dtype="float32",
                                 always_2d=True))  # fmt: skip
        except _DECODE_ERRORS:  # the damage: libsndfile cannot even seek now, and nothing more is read
            break
        if len(pieces[-1]) == 0:
            break
    return np.concatenate(pieces) if pieces else np.zeros((0, f.channels), np.float32)


def truncation(path: str | os.PathLike[str]) -> str | None:
    """Why a file that decodes is shorter than its header says (a recorder's battery ran out, a copy was cut), or
    None. libsndfile reads such a WAV up to where its data ends and notes the sizes its header should have held
    (``data : N (should be M)``) in its log; that note is the evidence."""
    try:
        log = sf.info(path).extra_info
    except (sf.LibsndfileError, RuntimeError):
        return None
    for line in log.splitlines():
        if line.startswith("data") and "(should be" in line:
            return f"truncated: the header declares more audio than the file holds ({line.strip()})"
    return None


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
    return np.stack([clip for _, clip in stream_windows([wave], window, hop)])


def stream_windows(blocks: Iterable[np.ndarray], window: int, hop: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, clip)`` for each window of :func:`window_starts` over a recording given in blocks, holding at
    most one block and one window of it."""
    if hop < 1 or window < 1:
        raise ValueError(f"window and hop must be >= 1, got window={window}, hop={hop}")
    held, offset = np.zeros(0, np.float32), 0  # the samples still needed, and where they start in the recording
    start, last = 0, None
    for block in blocks:
        held = np.concatenate([held, block])
        end = offset + len(held)
        while start + window <= end:
            yield start, held[start - offset : start - offset + window]
            last, start = start, start + hop
        keep = max(0, min(start, end - window) - offset)  # the next window's start, or the last full window
        held, offset = held[keep:], offset + keep
    n = offset + len(held)
    if last is None and n:  # no longer than one window: one, padded
        yield 0, fit_length(held, window)
    elif last is not None and last + window < n:  # the hop left a tail: a last window aligned to the end
        yield n - window, held[len(held) - window :]
