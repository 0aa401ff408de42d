"""A tiny trained model for the tests that need one: three tone "species" through prepare, featurize and training."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

from speciesclf.data.prepare import prepare
from speciesclf.features.config import FeatureConfig
from speciesclf.features.store import featurize
from speciesclf.models.saved import save_model
from speciesclf.params import validate
from speciesclf.training.config import TrainConfig
from speciesclf.training.run import train_model

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
FREQS = {"cricket": 500.0, "katydid": 1500.0, "cicada": 3000.0}


def tone(sr: int, seconds: float, freq: float, seed: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(sr * seconds)) / sr
    wave = (0.4 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    return np.stack([wave, 0.5 * wave], axis=1) if channels == 2 else wave


def _train_tiny_model(base: Path, epochs: int = 2, thresholds: bool = False, **features: Any) -> Path:
    """Three tone "species", four 1 s recordings each, through prepare, featurize and training: ``base/model``;
    with ``thresholds``, per-species detection thresholds fitted on its validation windows (one is enough)."""
    data = base / "recordings"
    for s, (label, freq) in enumerate(FREQS.items()):
        (data / label).mkdir(parents=True)
        for r in range(4):
            sf.write(data / label / f"r{r}.wav", tone(SR, 1.0, freq * (1 + 0.02 * r), 10 * s + r), SR)
    params = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")))
    params["data"].update({"source": "folder", "path": str(data)})
    params["features"].update(sample_rate=SR, clip_seconds=1.0, train_hop_seconds=0.5, **features)
    validate(params)
    prepare(params, base / "prepared")
    featurize(base / "prepared" / "manifest.csv", base / "features", FeatureConfig(**params["features"]))
    config = TrainConfig(epochs=epochs, warmup_epochs=0, device="cpu", precision="fp32")
    rule = {"rule": "fbeta", "beta": 1.0, "target_precision": 0.9, "shrinkage": 0.0} if thresholds else None
    trained = train_model(base / "features", "AudioCNN", None, config, log=None, thresholds=rule)
    save_model(base / "model", trained.network, trained.card)
    return base / "model"
