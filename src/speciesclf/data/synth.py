"""Seeded generator of a synthetic species-call dataset: the embedded default data of the project.

The pipeline needs labelled audio to run end to end without a download, so this module renders one from
a seed: clips of animal-like calls over coloured background noise, written as 16-bit PCM files plus a
``manifest.csv`` (``path,label,recording_id``). Only numpy and soundfile do the work, and each clip is built
with a handful of vectorised FFTs, so the default ~800 clips render in seconds on one core.

Design, and why:

* **Call kinds.** Each species gets one kind of call with its own parameters, jittered per call: ``whistle``
  (tonal FM sweep, linear or exponential, up or down), ``stack`` (harmonic stack with a species-specific
  amplitude profile), ``trill`` (tonal carrier chopped into syllables), ``pulse`` (band-noise pulse train)
  and ``buzz`` (amplitude-modulated noise band). All energy is kept below 7.5 kHz (features span
  50-8000 Hz, and a final FFT low-pass guarantees it).
* **Long tail.** Clip counts per species follow a Zipf-like law ``n_k = round(n_max * k^-a)`` with ``a``
  chosen so the most common species has ``imbalance`` times the clips of the rarest (``min_clips``), as in
  real field collections where a few species dominate and many are barely recorded.
* **Recordings.** A species' clips are grouped into recordings (one individual, one session) of
  1..``clips_per_recording`` clips that share background colour, rumble, SNR range and a small frequency
  offset of the individual. Clips of one recording are therefore more alike than clips of different ones,
  so splits must be grouped by ``recording_id``; every species has at least 3 recordings so a grouped
  train/val/test split can always place one of each species in every split.
* **Hard on purpose.** A benchmark everyone aces shows nothing: a share of species are near-twins of
  another (same kind, parameters 5-10% apart, about the spread of individuals), many clips are at low
  SNR, and half the clips hold a quieter call of another species. A small CNN should land well short of
  perfect, and rare species, seen in one or two training clips, should suffer most.
* **Determinism.** Every random draw comes from ``np.random.default_rng`` seeded by a ``SeedSequence`` of
  (seed, purpose, species, recording, clip), so a file's bytes depend only on the config and its own
  position, never on generation order; no global RNG, no time stamps in the files.
"""

from __future__ import annotations

import errno
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from speciesclf.choices import AUDIO_FORMATS
from speciesclf.files import atomic_path, write_csv
from speciesclf.limits import one_of

__all__ = ["KINDS", "Species", "SynthConfig", "generate", "make_species", "species_counts"]

KINDS: tuple[str, ...] = ("whistle", "stack", "trill", "pulse", "buzz")
_TONAL = frozenset({"whistle", "stack", "trill"})

# Spectral ceilings. Call parameters are kept under _F_SIGNAL_MAX; the final low-pass tapers from
# _F_LP_START to _F_LP_STOP, so nothing reaches the 7.5 kHz limit whatever the jitter.
_F_SIGNAL_MAX = 6800.0
_F_LP_START = 7000.0
_F_LP_STOP = 7400.0
_F_NOISE_FLOOR = 20.0  # 1/f^β is flattened below this so brown noise does not explode at DC

# Purposes mixed into every SeedSequence, so streams for different uses never coincide.
_SEED_SPECIES, _SEED_TWINS, _SEED_TWIN_NUDGE, _SEED_SPLIT, _SEED_RECORDING, _SEED_CLIP = range(6)


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. The defaults give the project's embedded dataset (89 species, ~800 clips)."""

    n_species: int = 89
    min_clips: int = 3  # clips of the rarest species (>= 3: one recording per split)
    imbalance: float = 30.0  # clips of the most common / clips of the rarest species
    clip_seconds: float = 5.0
    sample_rate: int = 16000
    clips_per_recording: int = 2  # max clips cut from one recording (one individual, one session)
    snr_db: tuple[float, float] = (-3.0, 20.0)  # per-clip SNR of the target calls vs the background noise
    distractor_prob: float = 0.5  # probability a clip also holds a quieter call of another species
    confusable_fraction: float = 0.3  # fraction of species that are near-twins of another species
    audio_format: str = "wav"  # "wav" or "flac", both PCM_16
    seed: int = 0

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("n_species", self.n_species >= 2, "must be >= 2"),
            ("min_clips", self.min_clips >= 3, "must be >= 3"),
            ("imbalance", self.imbalance >= 1, "must be >= 1"),
            ("clip_seconds", self.clip_seconds > 0, "must be > 0"),
            ("sample_rate", self.sample_rate >= 16000, "must be >= 16000 to hold 7.5 kHz"),
            ("clips_per_recording", self.clips_per_recording >= 1, "must be >= 1"),
            ("snr_db", len(self.snr_db) == 2 and self.snr_db[0] <= self.snr_db[1], "must be (low, high)"),
            ("distractor_prob", 0.0 <= self.distractor_prob <= 1.0, "must be in [0, 1]"),
            ("confusable_fraction", 0.0 <= self.confusable_fraction <= 1.0, "must be in [0, 1]"),
            ("audio_format", self.audio_format in AUDIO_FORMATS, f"must be {one_of(AUDIO_FORMATS)}"),
            ("seed", self.seed >= 0, "must be >= 0"),
        ]
        for field, ok, why in checks:
            if not ok:
                raise ValueError(f"SynthConfig.{field} {why}, got {getattr(self, field)!r}")
        if round(self.clip_seconds * self.sample_rate) < 256:
            raise ValueError(f"SynthConfig.clip_seconds too short for a clip, got {self.clip_seconds!r}")

    @classmethod
    def from_params(cls, params: dict) -> SynthConfig:
        """The config of params.yaml's ``synthetic`` section, seeded by its ``seed``."""
        s = params["synthetic"]
        return cls(**{**s, "snr_db": tuple(s["snr_db"])}, seed=params["seed"])


@dataclass(frozen=True)
class Species:
    """Call signature of one species; per-call jitter and per-recording offsets are applied on top."""

    index: int
    label: str  # e.g. "sp07_trill": zero-padded index (stable sort), then the kind of call
    kind: str  # one of KINDS
    freq: float  # Hz: centre of the whistle sweep / stack fundamental / trill carrier / noise band centre
    sweep_oct: float  # signed frequency sweep over one call, in octaves (+ up, - down); tonal kinds
    sweep_exp: bool  # exponential (True) or linear (False) frequency trajectory
    harmonics: tuple[float, ...]  # relative amplitudes of harmonics 1..n; tonal kinds
    bandwidth: float  # Hz, width of the noise band; pulse and buzz
    rate: float  # Hz: syllable rate (trill, pulse) or amplitude-modulation rate (buzz); 0 for none
    duty: float  # sounding fraction of a syllable (trill, pulse) or modulation depth (buzz)
    call_dur: float  # s, nominal duration of one call
    calls_per_clip: tuple[int, int]  # inclusive range of target calls in one clip
    twin_of: int | None = None  # index of the species this one is a near-twin of


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def species_counts(cfg: SynthConfig) -> list[int]:
    """Clips per species, most common first: ``round(min_clips * imbalance * k^-a)`` for k = 1..n_species.

    ``a = ln(imbalance) / ln(n_species)`` makes the last term exactly ``min_clips``, so the ratio of the
    first to the last is ``imbalance`` up to rounding.
    """
    n_max = cfg.min_clips * cfg.imbalance
    a = math.log(cfg.imbalance) / math.log(cfg.n_species)
    k = np.arange(1, cfg.n_species + 1, dtype=np.float64)
    counts = np.rint(n_max * k**-a).astype(int)
    return [max(cfg.min_clips, int(c)) for c in counts]


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _fit_band(freq: float, sweep_oct: float, lo: float, hi: float) -> float:
    """Shift ``freq`` so the whole sweep lies in [lo, hi] (the sweep itself is kept)."""
    half = abs(sweep_oct) / 2
    freq = min(freq, hi / 2**half)
    return max(freq, lo * 2**half)


def _draw_species(cfg: SynthConfig, i: int) -> dict:
    """Base parameters of species ``i``, from its own stream so they do not depend on other species."""
    rng = _rng(cfg.seed, _SEED_SPECIES, i)
    kind = KINDS[int(rng.integers(len(KINDS)))]
    p: dict = {
        "kind": kind,
        "sweep_oct": 0.0,
        "sweep_exp": bool(rng.random() < 0.5),
        "harmonics": (1.0,),
        "bandwidth": 0.0,
        "rate": 0.0,
        "duty": 1.0,
        "call_dur": _loguniform(rng, 0.1, 1.5),
    }
    sign = _sign(rng)
    if kind == "whistle":
        p["sweep_oct"] = sign * rng.uniform(0.15, 1.2)
        p["freq"] = _fit_band(_loguniform(rng, 500, 6000), p["sweep_oct"], 450, 6300)
        p["harmonics"] = (1.0, float(rng.uniform(0.0, 0.3)))  # a weak overtone, as in many bird whistles
    elif kind == "stack":
        p["sweep_oct"] = sign * rng.uniform(0.0, 0.4)
        p["freq"] = _loguniform(rng, 200, 1500)
        n_harm = int(rng.integers(2, 7))
        amps = rng.uniform(0.15, 1.0, n_harm)
        p["harmonics"] = tuple(float(a) for a in amps / amps.max())
    elif kind == "trill":
        p["sweep_oct"] = sign * rng.uniform(0.0, 0.6)
        p["freq"] = _fit_band(_loguniform(rng, 800, 6000), p["sweep_oct"], 700, 6300)
        p["rate"] = _loguniform(rng, 5, 60)
        p["duty"] = rng.uniform(0.3, 0.8)
    else:  # pulse / buzz: noise band
        p["freq"] = _loguniform(rng, 700, 5500)
        p["bandwidth"] = _loguniform(rng, 150, 2500) if kind == "pulse" else _loguniform(rng, 300, 3000)
        p["rate"] = _loguniform(rng, 5, 60)
        p["duty"] = rng.uniform(0.1, 0.45) if kind == "pulse" else rng.uniform(0.3, 0.9)
    if p["rate"] > 0:  # at least two syllables / modulation cycles per call
        p["call_dur"] = max(p["call_dur"], 2.0 / p["rate"])
    lo = int(rng.integers(1, 4))
    p["calls_per_clip"] = (lo, lo + int(rng.integers(0, 4)))
    return p


def _clamp_species(p: dict) -> dict:
    """Keep (possibly nudged) parameters in their valid ranges and the energy under the ceiling."""
    p["call_dur"] = float(np.clip(p["call_dur"], 0.08, 1.6))
    p["duty"] = float(np.clip(p["duty"], 0.05, 1.0))
    if p["kind"] in ("pulse", "buzz"):
        p["bandwidth"] = min(p["bandwidth"], 0.9 * p["freq"])
        p["freq"] = min(p["freq"], _F_SIGNAL_MAX - p["bandwidth"])
    else:
        p["freq"] = _fit_band(p["freq"], p["sweep_oct"], 150, 6300)
    return p


def make_species(cfg: SynthConfig) -> list[Species]:
    """Call signatures of all species, deterministic from ``cfg.seed``; index 0 is the most common."""
    params = [_draw_species(cfg, i) for i in range(cfg.n_species)]
    # Near-twins: copy another (non-twin) species' signature and nudge every continuous parameter by
    # 5-10%, about the spread of individuals, so the pair is separable only with care.
    n_twins = min(round(cfg.confusable_fraction * cfg.n_species), cfg.n_species - 1)
    rng = _rng(cfg.seed, _SEED_TWINS)
    twins = rng.choice(cfg.n_species, size=n_twins, replace=False)
    others = np.setdiff1d(np.arange(cfg.n_species), twins)
    sources = rng.choice(others, size=n_twins, replace=True)
    twin_of: dict[int, int] = {int(t): int(s) for t, s in zip(twins, sources, strict=True)}
    for t, s in twin_of.items():
        nrng = _rng(cfg.seed, _SEED_TWIN_NUDGE, t)
        p = dict(params[s])
        for key in ("freq", "sweep_oct", "bandwidth", "rate", "duty", "call_dur"):
            p[key] *= 1 + _sign(nrng) * nrng.uniform(0.05, 0.10)
        p["harmonics"] = tuple(float(a * nrng.uniform(0.85, 1.15)) for a in p["harmonics"])
        params[t] = p
    width = max(2, len(str(cfg.n_species - 1)))
    out = []
    for i, p in enumerate(params):
        p = _clamp_species(p)
        out.append(
            Species(
                index=i,
                label=f"sp{i:0{width}d}_{p['kind']}",
                kind=p["kind"],
                freq=float(p["freq"]),
                sweep_oct=float(p["sweep_oct"]),
                sweep_exp=bool(p["sweep_exp"]),
                harmonics=tuple(p["harmonics"]),
                bandwidth=float(p["bandwidth"]),
                rate=float(p["rate"]),
                duty=float(p["duty"]),
                call_dur=float(p["call_dur"]),
                calls_per_clip=tuple(p["calls_per_clip"]),
                twin_of=twin_of.get(i),
            )
        )
    return out


def _recording_sizes(n_clips: int, max_per_rec: int, rng: np.random.Generator) -> list[int]:
    """Split ``n_clips`` into recordings of 1..max_per_rec clips, at least 3 recordings."""
    n_min = max(3, math.ceil(n_clips / max_per_rec))
    # Aim for the mean size of a uniform 1..max draw; more (smaller) recordings if 3 are needed.
    n_rec = int(np.clip(round(n_clips * 2 / (1 + max_per_rec)), n_min, n_clips))
    sizes = np.ones(n_rec, dtype=int)
    extra = n_clips - n_rec
    if extra:  # hand out the remaining clips to free slots, at most max_per_rec - 1 per recording
        slots = rng.choice(n_rec * (max_per_rec - 1), size=extra, replace=False)
        sizes += np.bincount(slots // (max_per_rec - 1), minlength=n_rec)
    return [int(s) for s in sizes]


# ----------------------------------------------------------------------------------------------- rendering


def _band_noise(rng: np.random.Generator, n: int, sr: int, centre: float, bw: float) -> np.ndarray:
    """Gaussian-shaped noise band (FWHM ``bw``) around ``centre``, shaped in the frequency domain."""
    f = np.fft.rfftfreq(n, 1 / sr)
    sigma = bw / 2.355
    spec = (rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)) * np.exp(-0.5 * ((f - centre) / sigma) ** 2)
    x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _render_call(sp: Species, rng: np.random.Generator, sr: int, max_len: int, freq_scale: float) -> np.ndarray:
    """One call of ``sp`` with per-call jitter, at roughly unit RMS while sounding."""
    dur = sp.call_dur * rng.uniform(0.85, 1.15)
    n = int(np.clip(round(dur * sr), 32, max_len))
    t = np.arange(n) / sr
    u = np.arange(n) / n  # position within the call, 0..1
    fscale = freq_scale * (1 + 0.02 * rng.standard_normal())
    rate = sp.rate * rng.uniform(0.85, 1.15)
    if sp.kind in _TONAL:
        sweep = sp.sweep_oct * rng.uniform(0.9, 1.1)
        f0 = sp.freq * fscale * 2 ** (-sweep / 2)
        f1 = sp.freq * fscale * 2 ** (sweep / 2)
        traj = f0 * (f1 / f0) ** u if sp.sweep_exp else f0 + (f1 - f0) * u
        phase = 2 * np.pi * np.cumsum(traj) / sr
        fmax = max(f0, f1)
        sig = np.zeros(n)
        for h, amp in enumerate(sp.harmonics, start=1):
            if h * fmax < _F_SIGNAL_MAX and amp > 0:  # drop harmonics that would cross the ceiling
                sig += amp * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    else:
        bw = sp.bandwidth * rng.uniform(0.9, 1.1)
        sig = _band_noise(rng, n, sr, sp.freq * fscale, bw)
    if sp.kind in ("trill", "pulse"):
        # Hann-shaped syllables: smooth, so chopping adds little energy outside the carrier band.
        cyc = (t * rate + rng.uniform(0, 1)) % 1.0
        duty = float(np.clip(sp.duty * rng.uniform(0.9, 1.1), 0.05, 1.0))
        sig *= np.where(cyc < duty, np.sin(np.pi * np.minimum(cyc / duty, 1.0)) ** 2, 0.0)
    elif sp.kind == "buzz":
        sig *= 1 - sp.duty * 0.5 * (1 + np.cos(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    # Random onset/offset ramps, so calls start and end differently every time.
    env = np.ones(n)
    m_on, m_off = (max(2, int(rng.uniform(0.03, 0.3) * n)) for _ in range(2))
    env[:m_on] *= np.sin(0.5 * np.pi * np.arange(m_on) / m_on) ** 2
    env[n - m_off :] *= np.cos(0.5 * np.pi * np.arange(1, m_off + 1) / m_off) ** 2
    sig *= env
    return sig / (np.sqrt(np.mean(sig**2)) + 1e-12)


@functools.lru_cache(maxsize=4)
def _clip_grid(n: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """rfft frequencies of a clip and the final low-pass (cosine taper _F_LP_START.._F_LP_STOP)."""
    f = np.fft.rfftfreq(n, 1 / sr)
    lowpass = np.sin(0.5 * np.pi * np.clip((_F_LP_STOP - f) / (_F_LP_STOP - _F_LP_START), 0.0, 1.0)) ** 2
    f.flags.writeable = False
    lowpass.flags.writeable = False
    return f, lowpass


@dataclass(frozen=True)
class _Recording:
    beta: float  # background colour: power ∝ 1/f^β
    rumble: tuple[float, float, float] | None  # (centre Hz, width Hz, level dB re. background) or None
    freq_scale: float  # the individual's frequency offset
    snr_centre: float
    snr_half: float


def _draw_recording(cfg: SynthConfig, si: int, ri: int) -> _Recording:
    rng = _rng(cfg.seed, _SEED_RECORDING, si, ri)
    beta = rng.uniform(0.0, 2.0)
    rumble = None
    if rng.random() < 0.3:
        rumble = (rng.uniform(25, 120), rng.uniform(8, 40), rng.uniform(-6, 6))
    freq_scale = 1 + float(np.clip(0.025 * rng.standard_normal(), -0.06, 0.06))
    lo, hi = cfg.snr_db
    half = min(2.5, (hi - lo) / 2)  # clips of one session sit within ±2.5 dB of the session's SNR
    return _Recording(beta, rumble, freq_scale, rng.uniform(lo + half, hi - half), half)


def _render_clip(cfg: SynthConfig, species: list[Species], si: int, ri: int, ci: int, rec: _Recording) -> np.ndarray:
    """One clip as int16: target calls + maybe a distractor, over the recording's background."""
    rng = _rng(cfg.seed, _SEED_CLIP, si, ri, ci)
    sr = cfg.sample_rate
    n = round(cfg.clip_seconds * sr)
    f, lowpass = _clip_grid(n, sr)

    # Background: complex Gaussian spectrum shaped to 1/f^β, unit power after the low-pass.
    white = rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)
    shape = np.maximum(f, _F_NOISE_FLOOR) ** (-rec.beta / 2) * lowpass
    shape[0] = 0.0
    bg_spec = white * shape
    bg_power = np.sum(np.abs(bg_spec) ** 2)
    bg_spec *= np.sqrt(n * n / 2 / bg_power)  # Parseval for rfft: time-domain mean power ~1
    if rec.rumble is not None:
        fc, width, level_db = rec.rumble
        bump = np.exp(-0.5 * ((f - fc) / width) ** 2)
        rumble = (rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)) * bump
        rumble *= np.sqrt(n * n / 2 / np.sum(np.abs(rumble) ** 2) * 10 ** (level_db / 10))
        bg_spec += rumble

    # Target calls at random times; SNR is measured over the samples where they sound (event SNR).
    sp = species[si]
    target = np.zeros(n)
    active = np.zeros(n, dtype=bool)
    max_len = int(0.9 * n)
    for _ in range(int(rng.integers(sp.calls_per_clip[0], sp.calls_per_clip[1] + 1))):
        call = _render_call(sp, rng, sr, max_len, rec.freq_scale)
        start = int(rng.integers(0, n - call.size + 1))
        target[start : start + call.size] += call
        active[start : start + call.size] = True
    snr_db = rec.snr_centre + rng.uniform(-rec.snr_half, rec.snr_half)
    target *= np.sqrt(10 ** (snr_db / 10) / (np.mean(target[active] ** 2) + 1e-12))
    mix = target
    if rng.random() < cfg.distractor_prob:
        other = species[(si + 1 + int(rng.integers(len(species) - 1))) % len(species)]
        call = _render_call(other, rng, sr, max_len, 1 + 0.025 * float(rng.standard_normal()))
        call *= np.sqrt(10 ** ((snr_db - rng.uniform(6, 15)) / 10))
        start = int(rng.integers(0, n - call.size + 1))
        mix[start : start + call.size] += call

    x = np.fft.irfft(np.fft.rfft(mix) * lowpass + bg_spec, n)
    x -= x.mean()
    peak = rng.uniform(0.45, 0.55)  # a fixed level with a little jitter, far from clipping
    x *= peak / (np.max(np.abs(x)) + 1e-12)
    return np.rint(x * 32767).astype(np.int16)


# ----------------------------------------------------------------------------------------------- writing


def _write_audio(path: Path, data: np.ndarray, sr: int, fmt: str) -> None:
    with atomic_path(path) as tmp:  # the temporary name has no audio extension: name the format
        try:
            sf.write(tmp, data, sr, subtype="PCM_16", format=fmt.upper())
        except sf.LibsndfileError as exc:  # a full disk or a file-size limit: an I/O error naming the file
            raise OSError(errno.EIO, f"could not write audio ({exc})", str(path)) from None


def generate(cfg: SynthConfig, out_dir: Path) -> Path:
    """Write ``out_dir/audio/<label>/<recording_id>-c<k>.<fmt>`` and ``out_dir/manifest.csv``.

    Returns the manifest path. Audio files under ``out_dir/audio`` that the manifest does not list
    (left over from another config) are removed, so the folder always matches the manifest.
    """
    out_dir = Path(out_dir)
    audio_root = out_dir / "audio"
    species = make_species(cfg)
    counts = species_counts(cfg)
    rows: list[tuple[str, str, str]] = []
    kwidth = len(str(cfg.clips_per_recording - 1))
    for sp, n_clips in zip(species, counts, strict=True):
        sizes = _recording_sizes(n_clips, cfg.clips_per_recording, _rng(cfg.seed, _SEED_SPLIT, sp.index))
        rwidth = max(3, len(str(len(sizes) - 1)))
        folder = audio_root / sp.label
        folder.mkdir(parents=True, exist_ok=True)
        for ri, size in enumerate(sizes):
            rec_id = f"{sp.label}-r{ri:0{rwidth}d}"
            rec = _draw_recording(cfg, sp.index, ri)
            for ci in range(size):
                path = folder / f"{rec_id}-c{ci:0{kwidth}d}.{cfg.audio_format}"
                _write_audio(path, _render_clip(cfg, species, sp.index, ri, ci, rec), cfg.sample_rate, cfg.audio_format)
                rows.append((path.relative_to(out_dir).as_posix(), sp.label, rec_id))
    rows.sort()
    listed = {out_dir / r[0] for r in rows}
    for stale in sorted(audio_root.rglob("*")):
        if stale.is_file() and stale.suffix in (".wav", ".flac") and stale not in listed:
            stale.unlink()
    for d in sorted(audio_root.iterdir()):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    manifest = out_dir / "manifest.csv"
    write_csv(manifest, ("path", "label", "recording_id"), rows)
    return manifest
