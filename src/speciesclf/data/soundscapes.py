"""Synthetic soundscapes: long field-like recordings with calls of known species at known times, and their truth.

Detection needs what classification data lacks: long recordings where most of the time no species calls, and the
time of every call. A soundscape here is a background of coloured noise (power ∝ 1/f^β, β drawn per soundscape, as
the embedded dataset's backgrounds) with **bouts**: one species calling several times within up to one clip's
length, at an SNR drawn from ``snr_db``, bouts apart by exponential gaps (``bouts_per_minute`` on average). Calls
are the embedded dataset's species (:mod:`speciesclf.data.synth`, the same seed), drawn uniformly over species so
that rare ones are found as often as common ones. The truth of each soundscape is a Raven selection table, one
selection per bout: from its first call's beginning to its last call's end.

Every random draw comes from a seed sequence of (seed, soundscape), so a file's bytes depend only on the settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speciesclf.data.synth import SynthConfig, _render_call, _rng, _write_audio, make_species
from speciesclf.detections import Detection, write_raven

__all__ = ["Bout", "SoundscapeConfig", "render_soundscape", "write_soundscapes"]

_SEED_SOUNDSCAPE = 100  # apart from synth's purposes (0-5), so no stream coincides with the dataset's


@dataclass(frozen=True)
class SoundscapeConfig:
    recordings: int = 16
    seconds: float = 180.0
    bouts_per_minute: float = 6.0
    snr_db: tuple[float, float] = (0.0, 20.0)
    seed: int = 7


@dataclass(frozen=True)
class Bout:
    species: str
    begin: float  # seconds
    end: float


def _background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-power coloured noise, power ∝ 1/f^β above 20 Hz, nothing above 7.4 kHz (as the dataset's clips)."""
    f = np.fft.rfftfreq(n, 1 / sr)
    shape = np.maximum(f, 20.0) ** (-rng.uniform(0.0, 2.0) / 2) * (f < 7400)
    shape[0] = 0.0
    x = np.fft.irfft((rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)) * shape, n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def render_soundscape(synth: SynthConfig, cfg: SoundscapeConfig, index: int) -> tuple[np.ndarray, list[Bout]]:
    """Soundscape ``index``: int16 samples at ``synth.sample_rate`` and its bouts in time order."""
    rng = _rng(cfg.seed, _SEED_SOUNDSCAPE, index)
    species, sr = make_species(synth), synth.sample_rate
    n, clip = round(cfg.seconds * sr), round(synth.clip_seconds * sr)
    x, bouts = _background(rng, n, sr), []
    mean_gap = 60.0 / cfg.bouts_per_minute
    t = rng.exponential(mean_gap / 2)
    while True:
        span = round(rng.uniform(0.4, 1.0) * clip)  # the bout's calls fall within this many samples
        start = round(t * sr)
        if start + span > n:
            break
        sp = species[int(rng.integers(len(species)))]
        calls = [_render_call(sp, rng, sr, int(0.9 * span), 1 + 0.025 * float(rng.standard_normal()))]
        calls += [
            _render_call(sp, rng, sr, int(0.9 * span), 1.0)
            for _ in range(int(rng.integers(*sp.calls_per_clip, endpoint=True)) - 1)
        ]
        onsets = [start + int(rng.integers(0, span - c.size + 1)) for c in calls]
        gain = np.sqrt(10 ** (rng.uniform(*cfg.snr_db) / 10))
        for onset, call in zip(onsets, calls, strict=True):
            x[onset : onset + call.size] += gain * call
        begin, end = min(onsets), max(o + c.size for o, c in zip(onsets, calls, strict=True))
        bouts.append(Bout(sp.label, begin / sr, end / sr))
        t = end / sr + rng.exponential(mean_gap)
    x *= 0.5 / (np.max(np.abs(x)) + 1e-12)
    return np.rint(x * 32767).astype(np.int16), bouts


def write_soundscapes(synth: SynthConfig, cfg: SoundscapeConfig, out_dir: Path) -> list[Path]:
    """``out_dir/audio/soundscape_NN.wav`` and ``out_dir/truth/soundscape_NN.selections.txt`` (Raven, one
    selection per bout, Species the bout's); returns the audio paths."""
    paths = []
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    (out_dir / "truth").mkdir(parents=True, exist_ok=True)
    for i in range(cfg.recordings):
        audio, bouts = render_soundscape(synth, cfg, i)
        path = out_dir / "audio" / f"soundscape_{i:02d}.wav"
        _write_audio(path, audio, synth.sample_rate, "wav")
        truth = [Detection(str(path), b.species, b.begin, b.end, 1.0, 1.0, 1) for b in bouts]
        band = (0.0, synth.sample_rate / 2)
        write_raven(out_dir / "truth" / f"{path.stem}.selections.txt", truth, band, many=False, scores=False)
        paths.append(path)
    return paths
