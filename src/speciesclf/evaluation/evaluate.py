"""Score a trained model on a split of the feature store: window level and recording level."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speciesclf.evaluation.metrics import classification_metrics, per_class_table
from speciesclf.features.store import load_split
from speciesclf.files import read_json
from speciesclf.models.saved import load_model

__all__ = ["evaluate_model"]


def _recording_level(proba: np.ndarray, y: np.ndarray, recordings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean window probability per recording (recordings in first-seen order)."""
    order: dict[str, int] = {}
    for r in recordings:
        order.setdefault(r, len(order))
    idx = np.fromiter((order[r] for r in recordings), dtype=np.int64, count=len(recordings))
    sums = np.zeros((len(order), proba.shape[1]), dtype=np.float64)
    np.add.at(sums, idx, proba)
    counts = np.bincount(idx, minlength=len(order))[:, None]
    rec_y = np.zeros(len(order), dtype=np.int64)
    rec_y[idx] = y
    return sums / counts, rec_y


def evaluate_model(
    model_dir: str | os.PathLike[str],
    features_dir: str | os.PathLike[str],
    rare_threshold: int,
    split: str = "test",
    batch_size: int = 256,
) -> dict[str, Any]:
    """Window- and recording-level metrics on ``split``, plus the per-species table and confusion pairs."""
    model = load_model(model_dir)
    if read_json(Path(features_dir) / "labels.json")["species"] != model.species:
        raise ValueError(f"{model_dir}: trained on a different species list than {features_dir}")
    x, y, recordings = load_split(features_dir, split)
    with torch.no_grad():
        logits = [model.network(torch.as_tensor(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    # softmax in float64: probabilities that sum to one within float64 precision (sklearn checks it)
    proba = torch.softmax(torch.cat(logits).double(), dim=1).numpy()
    counts, species = model.card["train_counts"], model.species
    window = classification_metrics(y, proba, counts, rare_threshold)
    rec_proba, rec_y = _recording_level(proba, y, recordings)
    recording = {**classification_metrics(rec_y, rec_proba, counts, rare_threshold), "n_recordings": len(rec_y)}
    pred = proba.argmax(1)
    return {
        "window": window,
        "recording": recording,
        "per_class": per_class_table(y, proba, species, counts),
        "confusion": [{"actual": species[a], "predicted": species[p]} for a, p in zip(y, pred, strict=True)],
        "training": {k: model.card[k] for k in ("best_epoch", "epochs_run", "stopped_early")},
    }
