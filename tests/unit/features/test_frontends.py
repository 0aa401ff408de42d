"""Log-mel and PCEN front ends (speciesclf.features.frontends) against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio

from speciesclf.features.config import FeatureConfig
from speciesclf.features.frontends import LogMelExtractor, PCENExtractor, pcen

CONFIG = FeatureConfig(sample_rate=16000, clip_seconds=1.0, n_mels=32, n_fft=512, hop_length=160)


def _clips(n: int = 3) -> np.ndarray:
    t = np.arange(CONFIG.clip_samples) / CONFIG.sample_rate
    rng = np.random.default_rng(0)
    tones = [0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(t.size) for f in (500, 1500, 4000)]
    return np.stack(tones[:n]).astype(np.float32)


def test_log_mel_is_torchaudio_power_in_db_with_a_fixed_floor() -> None:
    clips = _clips()
    out = LogMelExtractor(CONFIG)(clips)
    assert out.shape == (3, CONFIG.n_mels, CONFIG.frames) and out.dtype == np.float32
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, hop_length=160, n_mels=32, f_min=50.0)
    expected = torchaudio.transforms.AmplitudeToDB("power", top_db=None)(mel(torch.from_numpy(clips)))
    np.testing.assert_allclose(out, expected[..., : CONFIG.frames].numpy(), rtol=1e-5, atol=1e-4)
    # each window alone gives the same features as in a batch: no batch-relative floor
    np.testing.assert_array_equal(LogMelExtractor(CONFIG)(clips[1]), out[1])


def test_the_band_of_a_tone_is_the_loudest() -> None:
    out = LogMelExtractor(CONFIG)(_clips())
    loudest = out.mean(axis=2).argmax(axis=1)
    assert loudest[0] < loudest[1] < loudest[2]  # 500 Hz, 1.5 kHz, 4 kHz


def _pcen_loop(e: np.ndarray, s: float, gain=0.98, bias=2.0, power=0.5, eps=1e-6) -> np.ndarray:
    """PCEN written out frame by frame in float64 (Wang et al. 2017, smoother at steady state on frame 0)."""
    m = np.empty_like(e)
    m[..., 0] = e[..., 0]
    for t in range(1, e.shape[-1]):
        m[..., t] = (1 - s) * m[..., t - 1] + s * e[..., t]
    return (e / (eps + m) ** gain + bias) ** power - bias**power


def test_pcen_matches_the_frame_by_frame_formula() -> None:
    energy = np.random.default_rng(1).gamma(2.0, 1e6, size=(2, 5, 200))
    out = pcen(torch.from_numpy(energy), smooth=0.05)
    np.testing.assert_allclose(out.numpy(), _pcen_loop(energy, 0.05), rtol=1e-9)


def test_pcen_flattens_stationary_background_and_keeps_an_onset() -> None:
    energy = torch.full((1, 1, 400), 1e8, dtype=torch.float64)
    energy[..., 300:310] *= 100.0  # a call 20 dB above a steady background
    out = pcen(energy, smooth=0.025)[0, 0]
    assert float(out[50:300].std()) < 1e-6  # the steady part is one constant level
    assert float(out[300]) > 10 * float(out[299])


def test_pcen_extractor_shape_and_smoothing_from_the_time_constant() -> None:
    extractor = PCENExtractor(CONFIG, time_constant=0.4)
    b = 0.4 * CONFIG.sample_rate / CONFIG.hop_length
    assert extractor.smooth == pytest.approx((math.sqrt(1 + 4 * b * b) - 1) / (2 * b * b))
    out = extractor(_clips())
    assert out.shape == (3, CONFIG.n_mels, CONFIG.frames) and np.isfinite(out).all()


@pytest.mark.parametrize("kwargs", [{"smooth": 0.0}, {"smooth": 1.5}, {"smooth": 0.1, "bias": 0.0}])
def test_pcen_refuses_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        pcen(torch.ones(1, 4), **kwargs)


def test_a_clip_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="expected clips of 16000 samples, got 100"):
        LogMelExtractor(CONFIG)(np.zeros((1, 100), np.float32))
