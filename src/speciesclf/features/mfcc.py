"""The feature settings of every front end, MFCC features of fixed-length clips, and per-band standardisation.

A clip of ``clip_seconds`` at ``sample_rate`` becomes ``(bands, frames)`` with
``frames = round(clip_seconds * sample_rate / hop_length)`` and ``bands`` = ``n_mfcc`` for the study's MFCCs
(20 x 500 for the default 5 s at 16 kHz, hop 10 ms) or ``n_mels`` for the log-mel and PCEN front ends
(:mod:`speciesclf.features.frontends`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torchaudio

from speciesclf.choices import FRONT_ENDS, PRETRAINED_AUDIO
from speciesclf.features.birdnet import EMBEDDING_SIZE as BIRDNET_EMBEDDING

__all__ = ["FRONT_ENDS", "FeatureConfig", "MFCCExtractor", "Standardizer"]


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
        nyquist = self.sample_rate / 2
        f_top = self.f_max if self.f_max is not None else nyquist
        checks = {  # key: (holds, the rule as the message states it)
            "front_end": (self.front_end in FRONT_ENDS, f"one of {', '.join(FRONT_ENDS)}"),
            "sample_rate": (self.sample_rate >= 1000, "at least 1000 Hz"),
            "clip_seconds": (self.clip_seconds > 0, "more than 0"),
            "train_hop_seconds": (0 < self.train_hop_seconds <= self.clip_seconds, "in (0, clip_seconds]"),
            "n_mfcc": (1 <= self.n_mfcc <= self.n_mels, f"from 1 to n_mels ({self.n_mels})"),
            "n_fft": (self.n_fft >= 16, "at least 16"),
            "hop_length": (1 <= self.hop_length <= self.n_fft, f"from 1 to n_fft ({self.n_fft})"),
            "n_mels": (self.n_mels >= 1, "at least 1"),
            "f_max": (
                self.f_max is None or 0 < self.f_max <= nyquist,
                f"null or in (0, {nyquist:g}] (Nyquist)",
            ),
            "f_min": (0 <= self.f_min < f_top, f"in [0, f_max) = [0, {f_top:g})"),
            "pcen_time_constant": (self.pcen_time_constant > 0, "more than 0 (seconds)"),
            "time_expansion": (self.time_expansion > 0, "more than 0"),
        }
        for key, value in PRETRAINED_AUDIO.get(self.front_end, {}).items():  # the audio the model was trained on
            checks[key] = (getattr(self, key) == value, f"{value:g} for the {self.front_end} front end")
        for key, (ok, rule) in checks.items():
            if not ok:
                raise ValueError(f"features.{key}: invalid value {getattr(self, key)!r}; expected {rule}")

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
    def bands(self) -> int:
        """Rows of a window's features: MFCC coefficients, mel bands for log-mel and PCEN, embedding values."""
        sizes = {"mfcc": self.n_mfcc, "birdnet": BIRDNET_EMBEDDING}
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


class MFCCExtractor:
    """``torchaudio.transforms.MFCC`` with the frame count pinned to :attr:`FeatureConfig.frames`."""

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self.transform = torchaudio.transforms.MFCC(
            sample_rate=config.sample_rate,
            n_mfcc=config.n_mfcc,
            melkwargs={
                "n_fft": config.n_fft,
                "hop_length": config.hop_length,
                "n_mels": config.n_mels,
                "f_min": config.f_min,
                "f_max": config.f_max,
                "center": True,
            },
        )

    @torch.no_grad()
    def __call__(self, clips: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(n, clip_samples)`` float → float32 ``(n, n_mfcc, frames)``; a single clip drops the leading axis."""
        x = torch.as_tensor(clips, dtype=torch.float32)
        if x.shape[-1] != self.config.clip_samples:
            raise ValueError(f"expected clips of {self.config.clip_samples} samples, got {x.shape[-1]}")
        mfcc = self.transform(x)  # center=True gives frames + 1; drop the last half-window frame
        return mfcc[..., : self.config.frames].contiguous().numpy()


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
