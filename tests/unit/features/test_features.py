"""Tests for speciesclf.features: MFCC shapes, the frame formula, train-only standardisation, config checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speciesclf.data.audio import load_mono, windows
from speciesclf.features.config import FeatureConfig, Standardizer
from speciesclf.features.frontends import extractor
from speciesclf.features.mfcc import MFCCExtractor


def _clips(n: int, config: FeatureConfig, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(config.clip_samples) / config.sample_rate
    tones = np.sin(2 * np.pi * rng.uniform(300, 3000, size=(n, 1)) * t)
    return (0.3 * tones + 0.01 * rng.standard_normal((n, config.clip_samples))).astype(np.float32)


def test_default_config() -> None:
    cfg = FeatureConfig()
    assert cfg.clip_samples == 80000
    assert cfg.frames == 500


def test_single_clip_shape() -> None:
    cfg = FeatureConfig()
    out = MFCCExtractor(cfg)(_clips(1, cfg)[0])
    assert out.shape == (20, 500)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


def test_batch_shape_and_consistency() -> None:
    cfg = FeatureConfig()
    clips = _clips(3, cfg)
    ext = MFCCExtractor(cfg)
    batch = ext(clips)
    assert batch.shape == (3, 20, 500)
    assert batch.dtype == np.float32
    np.testing.assert_allclose(batch[1], ext(clips[1]), rtol=1e-5, atol=1e-4)
    # different tones give different features
    assert not np.allclose(batch[0], batch[1])


def test_accepts_torch_tensor() -> None:
    cfg = FeatureConfig(clip_seconds=0.5)
    clips = _clips(2, cfg)
    ext = MFCCExtractor(cfg)
    np.testing.assert_array_equal(ext(torch.from_numpy(clips)), ext(clips))


@pytest.mark.parametrize("length", [79999, 80001, 16000])
def test_wrong_clip_length(length: int) -> None:
    ext = MFCCExtractor(FeatureConfig())
    with pytest.raises(ValueError, match="80000 samples"):
        ext(np.zeros((2, length), dtype=np.float32))


def test_frames_formula_44k() -> None:
    cfg = FeatureConfig(sample_rate=44100, hop_length=441, n_fft=1024)
    assert cfg.clip_samples == 220500
    assert cfg.frames == round(5.0 * 44100 / 441) == 500
    out = MFCCExtractor(cfg)(_clips(2, cfg))
    assert out.shape == (2, 20, 500)


@pytest.mark.parametrize(("clip_seconds", "hop"), [(1.0, 160), (0.37, 160), (2.5, 256), (1.23, 333)])
def test_frames_formula_matches_output(clip_seconds: float, hop: int) -> None:
    cfg = FeatureConfig(clip_seconds=clip_seconds, hop_length=hop)
    assert cfg.frames == round(round(clip_seconds * 16000) / hop)
    assert MFCCExtractor(cfg)(_clips(1, cfg)).shape == (1, 20, cfg.frames)


def _train_val(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    loc = np.linspace(-5, 5, 20)[None, :, None]
    scale = np.linspace(0.5, 4, 20)[None, :, None]
    train = (loc + scale * rng.standard_normal((40, 20, 64))).astype(np.float32)
    val = (loc + scale * rng.standard_normal((10, 20, 64))).astype(np.float32)
    return train, val


def test_standardizer_train_statistics() -> None:
    train, _ = _train_val()
    std = Standardizer.fit(train)
    assert std.mean.shape == (20,)
    assert std.std.shape == (20,)
    z = std(train)
    assert z.shape == train.shape
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=(0, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2)), 1, atol=1e-4)
    np.testing.assert_allclose(std.mean, train.astype(np.float64).mean(axis=(0, 2)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std.std, train.astype(np.float64).std(axis=(0, 2)), rtol=1e-6)


def test_standardizer_uses_only_training_data() -> None:
    train, _ = _train_val()
    std = Standardizer.fit(train)
    shifted = train + 3.0  # a "validation" split whose mean differs: it must not be centred on itself
    z_train, z_val = std(train), std(shifted)
    np.testing.assert_allclose(z_val - z_train, np.broadcast_to(3.0 / std.std[None, :, None], train.shape), rtol=1e-4)
    np.testing.assert_allclose(z_val.mean(axis=(0, 2)), 3.0 / std.std, rtol=1e-3, atol=1e-4)
    # applying the transform never changes the fitted statistics
    before = std.to_dict()
    std(shifted)
    assert std.to_dict() == before


def test_standardizer_fit_is_independent_of_val() -> None:
    train, val = _train_val()
    a = Standardizer.fit(train)
    b = Standardizer.fit(train.copy())
    std_all = Standardizer.fit(np.concatenate([train, val + 10]))
    np.testing.assert_array_equal(a.mean, b.mean)
    assert not np.allclose(a.mean, std_all.mean)


def test_standardizer_centres_a_constant_coefficient_without_scaling_it() -> None:
    """A coefficient constant in training (a BirdNET unit that never fired there) keeps its units: a small value on
    new audio stays small instead of becoming a z-score of 1e4 that decides the prediction alone."""
    x = np.zeros((3, 2, 8), dtype=np.float32)
    x[:, 1] = np.arange(8)
    std = Standardizer.fit(x)
    assert std.std[0] == 1.0 and std.std[1] == pytest.approx(np.arange(8).std())
    np.testing.assert_array_equal(std(x)[:, 0], 0)
    new = x[:1].copy()
    new[0, 0] = 0.02
    np.testing.assert_allclose(std(new)[0, 0], 0.02)


@pytest.mark.parametrize("shape", [(0, 20, 64), (20, 64)])
def test_standardizer_fit_invalid(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="bands, frames"):
        Standardizer.fit(np.zeros(shape, dtype=np.float32))


def test_standardizer_round_trip() -> None:
    train, val = _train_val()
    std = Standardizer.fit(train)
    d = json.loads(json.dumps(std.to_dict()))
    assert set(d) == {"mean", "std"}
    again = Standardizer.from_dict(d)
    np.testing.assert_array_equal(again.mean, std.mean)
    np.testing.assert_array_equal(again.std, std.std)
    np.testing.assert_array_equal(again(val), std(val))


def test_time_expansion_divides_frequencies_and_multiplies_durations(tmp_path: Path) -> None:
    """A 4 kHz tone read at time expansion 2 is a 2 kHz tone twice as long, in the band a 2 kHz tone fills."""
    sr, t = 16000, np.arange(16000) / 16000
    for freq in (4000, 2000):
        sf.write(tmp_path / f"{freq}.wav", 0.4 * np.sin(2 * np.pi * freq * t), sr)
    plain = FeatureConfig(front_end="logmel", sample_rate=sr, clip_seconds=0.5)
    slowed = FeatureConfig(front_end="logmel", sample_rate=sr, clip_seconds=0.5, time_expansion=2.0)

    def loudest_band(path: Path, config: FeatureConfig) -> tuple[int, int]:
        wave = load_mono(path, config.read_rate)
        x = extractor(config)(windows(wave, config.clip_samples, config.clip_samples))
        return len(x), int(x.mean(axis=(0, 2)).argmax())

    n, band_4k_slowed = loudest_band(tmp_path / "4000.wav", slowed)
    assert n == 4  # 1 s became 2 s: four windows of 0.5 s
    assert loudest_band(tmp_path / "4000.wav", plain) != (2, band_4k_slowed)
    assert loudest_band(tmp_path / "2000.wav", plain) == (2, band_4k_slowed)


def test_a_card_written_before_front_ends_existed_reads_as_mfcc() -> None:
    newer = ("front_end", "pcen_time_constant", "time_expansion")  # keys the first cards did not have
    old = {k: v for k, v in FeatureConfig().to_dict().items() if k not in newer}
    assert FeatureConfig.from_dict(old) == FeatureConfig()


@pytest.mark.parametrize(("front_end", "bands"), [("mfcc", 20), ("logmel", 40), ("pcen", 40)])
def test_bands_are_coefficients_or_mel_bands_by_front_end(front_end: str, bands: int) -> None:
    config = FeatureConfig(front_end=front_end)
    assert config.bands == bands
    clips = _clips(2, config)
    assert extractor(config)(clips).shape == (2, bands, config.frames)


def test_config_round_trip() -> None:
    cfg = FeatureConfig(sample_rate=22050, hop_length=220, f_max=8000.0)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg


def test_config_from_dict_unknown_key() -> None:
    with pytest.raises(ValueError, match="n_mfc") as exc:
        FeatureConfig.from_dict({"n_mfc": 20})
    assert "n_mfcc" in str(exc.value)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"sample_rate": 100}, "sample_rate"),
        ({"clip_seconds": 0}, "clip_seconds"),
        ({"clip_seconds": -1.0}, "clip_seconds"),
        ({"n_mfcc": 0}, "n_mfcc"),
        ({"n_mfcc": 41}, "n_mfcc"),
        ({"n_fft": 8}, "n_fft"),
        ({"clip_seconds": 0.1, "n_fft": 4096}, "n_fft"),  # 1600 samples: under half of n_fft
        ({"hop_length": 0}, "hop_length"),
        ({"hop_length": 1024}, "hop_length"),
        ({"n_mels": 0, "n_mfcc": 0}, "n_mfcc"),
        ({"f_min": -1.0}, "f_min"),
        ({"f_min": 8000.0}, "f_min"),
        ({"f_min": 500.0, "f_max": 400.0}, "f_min"),
        ({"f_max": 9000.0}, "f_max"),
        ({"f_max": 0}, "f_max"),
        ({"f_max": -100.0}, "f_max"),
        ({"front_end": "mel"}, "front_end"),
        ({"pcen_time_constant": 0.0}, "pcen_time_constant"),
        ({"time_expansion": 0.0}, "time_expansion"),
    ],
)
def test_config_invalid(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(ValueError, match=rf"features\.{key}:"):
        FeatureConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [  # the rules between keys: tests/unit/test_params.py (FeatureConfig and params in the same words)
        (
            {"n_mfcc": 41},
            "features.n_mfcc: got 41; must be <= features.n_mels (40): "
            "the MFCCs are a cosine transform of the mel bands",
        ),
        ({"n_fft": 8}, "features.n_fft: got 8; allowed: an integer >= 16 and <= 65536"),
        ({"time_expansion": 32.0}, "features.time_expansion: got 32.0; allowed: a number >= 0.1 and <= 16"),
        ({"front_end": "mel"}, "features.front_end: got 'mel'; allowed: one of mfcc, logmel, pcen, birdnet"),
    ],
)
def test_an_invalid_value_names_the_rule_it_breaks(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError) as exc:
        FeatureConfig(**kwargs)
    assert str(exc.value) == message


def test_config_f_max_nyquist_ok() -> None:
    assert FeatureConfig(f_max=8000.0).f_max == 8000.0
