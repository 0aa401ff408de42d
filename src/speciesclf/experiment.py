"""Train one model from the features, evaluate a trained model: the work of the training and evaluate stages.

A model directory holds ``model.pt`` and ``model.json`` — everything prediction needs (species, feature settings,
normalisation statistics).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speciesclf.featurize import load_split
from speciesclf.io import read_json, write_json
from speciesclf.losses import FocalLoss
from speciesclf.metrics import classification_metrics, confusion, per_class_table
from speciesclf.models import build_model
from speciesclf.training import EpochStats, TrainConfig, Trainer, load_checkpoint, save_checkpoint

__all__ = ["build_loss", "evaluate_model", "load_model", "train_model"]


# -- train ----------------------------------------------------------------------------------------------------
def build_loss(loss: dict[str, Any] | None, train_counts: Sequence[int]) -> torch.nn.Module:
    """``None`` → cross-entropy (the study's baseline); else focal loss from the ``loss`` params section."""
    if loss is None:
        return torch.nn.CrossEntropyLoss()
    common = {"gamma": float(loss["gamma"]), "label_smoothing": float(loss.get("label_smoothing", 0.0))}
    if loss.get("alpha") == "balanced":
        return FocalLoss.balanced(train_counts, beta=float(loss.get("beta", 0.999)), **common)
    alpha = loss.get("alpha")
    return FocalLoss(alpha=None if alpha is None else float(alpha), **common)


def train_model(
    features_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    model_name: str,
    loss: dict[str, Any] | None,
    config: TrainConfig,
    callbacks: Sequence[Callable[[EpochStats], None]] = (),
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train ``model_name`` on the features; write ``model.pt`` + ``model.json`` to ``out_dir``.

    ``model.json`` holds only reproducible facts (no wall-clock times) so that identical runs give identical
    bytes; the returned dict adds ``train_seconds`` and the full history for the caller to log. Under DDP
    (:mod:`speciesclf.distributed`) every rank trains and only rank 0 writes.
    """
    features_dir, out_dir = Path(features_dir), Path(out_dir)
    labels = read_json(features_dir / "labels.json")
    x_train, y_train, _ = load_split(features_dir, "train")
    x_val, y_val, _ = load_split(features_dir, "val")
    torch.manual_seed(config.seed)  # weight initialisation
    model = build_model(model_name, n_classes=len(labels["species"]))
    loss_fn = build_loss(loss, labels["train_counts"])
    trainer = Trainer(model, loss_fn, config, callbacks=callbacks, log=log)
    result = trainer.fit(x_train, y_train, x_val, y_val)
    history = [{k: v for k, v in asdict(h).items() if k not in ("seconds", "peak_memory_mb")} for h in result.history]
    meta = {
        "model": model_name,
        "species": labels["species"],
        "train_counts": labels["train_counts"],
        "features": read_json(features_dir / "features.json"),
        "norm": read_json(features_dir / "norm.json"),
        "loss": loss if loss is not None else {"name": "cross_entropy"},
        "train": asdict(config),
        "precision": result.precision,
        "world_size": result.world_size,  # training processes (DDP); the effective batch is batch_size times this
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "best_val_f1_macro": result.best_val_f1_macro,
        "history": history,
    }
    if trainer.world.is_main:
        save_checkpoint(trainer.model, out_dir / "model.pt", best_epoch=result.best_epoch)
        write_json(out_dir / "model.json", meta)
    return {**meta, "train_seconds": result.train_seconds, "device": result.device}


def load_model(model_dir: str | os.PathLike[str]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained network (eval mode, CPU) and its ``model.json``."""
    model_dir = Path(model_dir)
    meta = read_json(model_dir / "model.json")
    model = build_model(meta["model"], n_classes=len(meta["species"]))
    model.load_state_dict(load_checkpoint(model_dir / "model.pt")["model_state"])
    return model.eval(), meta


# -- evaluate -------------------------------------------------------------------------------------------------
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
    model, meta = load_model(model_dir)
    feats_species = read_json(Path(features_dir) / "labels.json")["species"]
    if feats_species != meta["species"]:
        raise ValueError(f"{model_dir}: trained on a different species list than {features_dir}")
    x, y, recordings = load_split(features_dir, split)
    with torch.no_grad():
        logits = [model(torch.as_tensor(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    # softmax in float64: probabilities that sum to one within float64 precision (sklearn checks it)
    proba = torch.softmax(torch.cat(logits).double(), dim=1).numpy()
    counts, species = meta["train_counts"], meta["species"]
    window = classification_metrics(y, proba, counts, rare_threshold)
    rec_proba, rec_y = _recording_level(proba, y, recordings)
    recording = {**classification_metrics(rec_y, rec_proba, counts, rare_threshold), "n_recordings": len(rec_y)}
    pred = proba.argmax(1)
    return {
        "window": window,
        "recording": recording,
        "per_class": per_class_table(y, proba, species, counts),
        "confusion": [{"actual": species[a], "predicted": species[p]} for a, p in zip(y, pred, strict=True)],
        "confusion_matrix": confusion(y, proba, len(species)).tolist(),
        "training": {k: meta[k] for k in ("best_epoch", "epochs_run", "stopped_early")},
    }
