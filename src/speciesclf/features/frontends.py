r"""Spectrogram front ends beside the study's MFCCs: log-mel and per-channel energy normalisation (PCEN).

Both turn clips ``(n, clip_samples)`` into float32 ``(n, n_mels, frames)`` with the mel filterbank of a
:class:`~speciesclf.features.config.FeatureConfig` (``n_fft``, ``hop_length``, ``n_mels``, ``f_min``, ``f_max``), so
they are drop-in replacements for :class:`~speciesclf.features.mfcc.MFCCExtractor` with ``n_mels`` bands.

Log-mel: :math:`10 \log_{10}(\max(E, 10^{-10}))` of the mel power spectrogram :math:`E`. The floor is fixed rather
than relative to the loudest bin (as ``AmplitudeToDB(top_db=...)`` is), so one window's features never depend on
what else is in its batch.

PCEN (Wang et al. 2017, "Trainable frontend for robust and far-field keyword spotting", ICASSP; defaults as
``librosa.pcen``): with the mel magnitude :math:`E` of the clip scaled to 32-bit integer range and :math:`M` its
first-order IIR smoothing over time, :math:`M_t = (1 - s) M_{t-1} + s E_t` (started at steady state on the first
frame),

.. math::

    \mathrm{PCEN}(t, f) = \Big( \frac{E}{(\epsilon + M)^{\alpha}} + \delta \Big)^{r} - \delta^{r}

with :math:`s` from a time constant :math:`T` (:math:`s = (\sqrt{1 + 4b^2} - 1) / (2b^2)`, :math:`b = T / \text{hop}`),
gain :math:`\alpha = 0.98`, bias :math:`\delta = 2`, power :math:`r = 0.5`, :math:`\epsilon = 10^{-6}`. It divides
each band by its own recent level: stationary background (wind, rain, a cicada chorus) is flattened, onsets stand
out, which suits field recordings (Lostanlen et al. 2019, "Per-channel energy normalization: why and how").
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchaudio

from speciesclf.features.birdnet import BirdNETExtractor
from speciesclf.features.config import FeatureConfig
from speciesclf.features.mfcc import MFCCExtractor

__all__ = ["Extractor", "LogMelExtractor", "PCENExtractor", "extractor", "pcen"]

_DB_FLOOR = 1e-10  # -100 dB power: below any 16-bit recording's noise floor
_PCEN_SCALE = 2.0**31  # librosa's convention: PCEN's bias and gain assume integer-range magnitudes


def pcen(
    energy: torch.Tensor,
    smooth: float,
    gain: float = 0.98,
    bias: float = 2.0,
    power: float = 0.5,
    eps: float = 1e-6,
) -> torch.Tensor:
    """PCEN of a non-negative ``(..., bands, frames)`` tensor along its last axis (formula in the module doc).

    ``smooth`` is the IIR coefficient :math:`s` in (0, 1]; the smoother starts at each band's first frame.
    """
    if not 0 < smooth <= 1:
        raise ValueError(f"smooth must be in (0, 1], got {smooth}")
    if gain < 0 or bias <= 0 or power <= 0 or eps <= 0:
        raise ValueError(f"need gain >= 0 and bias, power, eps > 0; got {gain}, {bias}, {power}, {eps}")
    first = energy[..., :1]
    # M_t = (1-s) M_{t-1} + s E_t with M_{-1} = E_0: the zero-state filter of (E - E_0), plus E_0 (linearity)
    a = torch.tensor([1.0, smooth - 1.0], dtype=energy.dtype)
    b = torch.tensor([smooth, 0.0], dtype=energy.dtype)
    smoothed = torchaudio.functional.lfilter(energy - first, a, b, clamp=False) + first
    return (energy / (eps + smoothed) ** gain + bias) ** power - bias**power


def _smoothing(time_constant: float, config: FeatureConfig) -> float:
    """librosa's conversion of a time constant (seconds) to the IIR coefficient at this hop."""
    b = time_constant * config.sample_rate / config.hop_length
    return (math.sqrt(1 + 4 * b**2) - 1) / (2 * b**2)


class _MelExtractor:
    """The mel spectrogram of :class:`FeatureConfig`, frame count pinned to ``config.frames``."""

    power = 2.0

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            f_min=config.f_min,
            f_max=config.f_max,
            center=True,
            power=self.power,
        )

    def transform(self, mel: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, clips: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(n, clip_samples)`` float → float32 ``(n, n_mels, frames)``; a single clip drops the leading axis."""
        x = torch.as_tensor(clips, dtype=torch.float32)
        if x.shape[-1] != self.config.clip_samples:
            raise ValueError(f"expected clips of {self.config.clip_samples} samples, got {x.shape[-1]}")
        mel = self.mel(x)[..., : self.config.frames]  # center=True gives frames + 1: drop the half-window frame
        return self.transform(mel).contiguous().numpy()


class LogMelExtractor(_MelExtractor):
    """Log-mel power in dB (``10 log10``, floored at -100 dB)."""

    def transform(self, mel: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(mel, min=_DB_FLOOR))


class PCENExtractor(_MelExtractor):
    """PCEN of the mel magnitude, smoothed with a ``time_constant`` in seconds (librosa's default 0.4 s)."""

    power = 1.0

    def __init__(self, config: FeatureConfig, time_constant: float = 0.4) -> None:
        super().__init__(config)
        self.smooth = _smoothing(time_constant, config)

    def transform(self, mel: torch.Tensor) -> torch.Tensor:
        return pcen(mel * _PCEN_SCALE, self.smooth)


Extractor = MFCCExtractor | LogMelExtractor | PCENExtractor | BirdNETExtractor


def extractor(config: FeatureConfig) -> Extractor:
    """The front end ``config.front_end`` names: clips ``(n, clip_samples)`` → ``(n, config.bands, config.frames)``."""
    if config.front_end == "logmel":
        return LogMelExtractor(config)
    if config.front_end == "pcen":
        return PCENExtractor(config, config.pcen_time_constant)
    if config.front_end == "birdnet":
        return BirdNETExtractor()
    return MFCCExtractor(config)
