"""The feature settings of every front end (saved with each model) and per-band standardisation; torch-free, so
that validating params and preparing the data load no torch.

A clip of ``clip_seconds`` at ``sample_rate`` becomes ``(bands, frames)`` with
``frames = round(clip_seconds * sample_rate / hop_length)`` and ``bands`` = ``n_mfcc`` for the study's MFCCs
(20 x 500 for the default 5 s at 16 kHz, hop 10 ms) or ``n_mels`` for the log-mel and PCEN front ends
(:mod:`speciesclf.features.frontends`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from speciesclf.choices import BIRDNET_EMBEDDING_SIZE, FRONT_ENDS, PRETRAINED_AUDIO
from speciesclf.limits import Limit, one_of, refusal

__all__ = ["FEATURE_LIMITS", "FeatureConfig", "Standardizer", "broken_feature_rule"]

# each numeric `features` key's own range; params.py's schema is built from these (the rules between keys:
# broken_feature_rule)
FEATURE_LIMITS: dict[str, Limit] = {
    "sample_rate": Limit(8000, 384000, integer=True),
    "clip_seconds": Limit(0.1, 60),
    "train_hop_seconds": Limit(0, 60, lower_open=True),
    "n_mfcc": Limit(1, 128, integer=True),
    "n_fft": Limit(16, 65536, integer=True),
    "hop_length": Limit(1, 65536, integer=True),
    "n_mels": Limit(1, 512, integer=True),
    "f_min": Limit(0),
    "f_max": Limit(0, lower_open=True, optional=True),  # null: Nyquist
    "pcen_time_constant": Limit(0, 60, lower_open=True),  # seconds
    "time_expansion": Limit(0.1, 16),
}


def broken_feature_rule(feats: Mapping[str, Any], section: str = "features") -> str | None:
    """The one line refusing the first rule between keys that a whole features section breaks, its keys named
    under ``section``; None when every rule holds. Each key's own limit (:data:`FEATURE_LIMITS`) is checked first."""
    front_end, clip_seconds, sample_rate = feats["front_end"], feats["clip_seconds"], feats["sample_rate"]
    n_fft, nyquist, f_max = feats["n_fft"], sample_rate / 2, feats["f_max"]
    clip_samples = round(clip_seconds * sample_rate)
    f_top = f"{section}.f_max ({f_max:g})" if f_max is not None else f"the Nyquist frequency ({nyquist:g})"
    rules = [  # key, whether it holds, what it must be
        *(  # the audio the pretrained model was trained on
            (key, feats[key] == value, f"the {front_end} front end takes {value:g}")
            for key, value in PRETRAINED_AUDIO.get(front_end, {}).items()
        ),
        (
            "train_hop_seconds",
            feats["train_hop_seconds"] <= clip_seconds,
            f"must be <= {section}.clip_seconds ({clip_seconds:g}): a larger hop skips audio",
        ),
        (
            "n_mfcc",
            feats["n_mfcc"] <= feats["n_mels"],
            f"must be <= {section}.n_mels ({feats['n_mels']}): the MFCCs are a cosine transform of the mel bands",
        ),
        (
            "n_fft",
            n_fft // 2 < clip_samples,
            f"must be under twice the clip's {clip_samples} samples ({section}.clip_seconds x {section}.sample_rate):"
            " the clip is padded by n_fft/2 on each side",
        ),
        (
            "hop_length",
            feats["hop_length"] <= n_fft,
            f"must be <= {section}.n_fft ({n_fft}): a larger hop skips samples",
        ),
        (
            "f_max",
            f_max is None or f_max <= nyquist,
            f"must be <= {nyquist:g}, the Nyquist frequency of {section}.sample_rate",
        ),
        ("f_min", feats["f_min"] < (nyquist if f_max is None else f_max), f"must be below {f_top}"),
    ]
    for key, holds, rule in rules:
        if not holds:
            return f"{section}.{key}: got {feats[key]!r}; {rule}"
    return None


@dataclass(frozen=True)
class FeatureConfig:
    """The ``features`` params: how recordings become windows and windows become features (saved with each model)."""

    front_end: str = "mfcc"  # one of FRONT_ENDS
    sample_rate: int = 16000
    clip_seconds: float = 5.0
    train_hop_seconds: float | None = None  # hop between training windows (< clip: overlap); None: one clip
    n_mfcc: int = 20
    n_fft: int = 512
    hop_length: int = 160
    n_mels: int = 40
    f_min: float = 50.0
    f_max: float | None = None  # None: Nyquist
    pcen_time_constant: float = 0.4  # seconds; PCEN's smoother (librosa's default)
    # Recordings are played this many times slower before anything else, as a bat detector's time expansion does:
    # every frequency divided by it, every duration multiplied. The other keys then describe the slowed audio.
    time_expansion: float = 1.0

    def __post_init__(self) -> None:
        if self.train_hop_seconds is None:
            object.__setattr__(self, "train_hop_seconds", self.clip_seconds)
        if self.front_end not in FRONT_ENDS:
            raise ValueError(refusal("features.front_end", self.front_end, one_of(FRONT_ENDS)))
        for key, limit in FEATURE_LIMITS.items():
            if not limit.admits(getattr(self, key)):
                raise ValueError(refusal(f"features.{key}", getattr(self, key), limit.rule))
        broken = broken_feature_rule(vars(self))
        if broken is not None:
            raise ValueError(broken)

    @property
    def read_rate(self) -> int:
        """The rate a recording is resampled to and then taken as ``sample_rate`` audio: that is time expansion."""
        return round(self.sample_rate * self.time_expansion)

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)

    @property
    def frames(self) -> int:
        """Columns of a window's features: STFT frames, or 1 for an embedding."""
        return 1 if self.front_end == "birdnet" else round(self.clip_samples / self.hop_length)

    @property
    def train_hop_frames(self) -> int:
        """The training hop in feature frames: how far a random crop may move a window."""
        return round(self.train_hop_seconds * self.sample_rate / self.hop_length)

    @property
    def bands(self) -> int:
        """Rows of a window's features: MFCC coefficients, mel bands for log-mel and PCEN, embedding values."""
        sizes = {"mfcc": self.n_mfcc, "birdnet": BIRDNET_EMBEDDING_SIZE}
        return sizes.get(self.front_end, self.n_mels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"features: unknown key(s) {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**d)


class Standardizer:
    """Per-band (per-coefficient) mean/std, fitted on the training split only and applied to every split."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    @classmethod
    def fit(cls, train: np.ndarray, eps: float = 1e-6) -> Standardizer:
        """``train``: ``(n, bands, frames)``; statistics over clips and frames, accumulated in float64.

        A band constant in training (std at most ``eps``) is centred but not scaled, as scikit-learn's
        StandardScaler does: divided by ``eps``, a tiny value elsewhere became a z-score in the tens of thousands.
        Seen with BirdNET embeddings, whose units that never fire on a small training split fire on new audio."""
        if train.ndim != 3 or train.shape[0] == 0:
            raise ValueError(f"need training features of shape (n>0, bands, frames), got {train.shape}")
        mean = train.mean(axis=(0, 2), dtype=np.float64)
        std = np.sqrt(((train - mean[None, :, None]) ** 2).mean(axis=(0, 2), dtype=np.float64))
        return cls(mean, np.where(std > eps, std, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean[:, None]) / self.std[:, None]).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> Standardizer:
        return cls(np.asarray(d["mean"]), np.asarray(d["std"]))
