"""One run of the study, from the feature store to a trained model: the work of the training stages."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from speciesclf.features.store import FeatureStore, StoreFacts
from speciesclf.models.cnn import build_model
from speciesclf.models.inference import window_proba
from speciesclf.models.losses import build_loss
from speciesclf.thresholds import fit_thresholds
from speciesclf.training import distributed
from speciesclf.training.augment import AugmentConfig, DecibelScale, WindowChain
from speciesclf.training.checkpoint import TrainingState, code_files, fingerprint
from speciesclf.training.config import TrainConfig
from speciesclf.training.trainer import EpochStats, Trainer, TrainResult

__all__ = [
    "TrainedRun",
    "Windows",
    "resources",
    "train_model",
    "train_windows",
]


@dataclass(frozen=True)
class TrainedRun:
    network: nn.Module  # with the best epoch's weights
    card: dict[str, Any]  # model.json: reproducible facts only (see speciesclf.models.saved)
    train_seconds: float
    device: str
    state: TrainingState | None = None  # the per-epoch state: discard it once the model is saved
    resources: dict[str, Any] = field(default_factory=dict)  # what the run took (see :func:`resources`)


@dataclass(frozen=True)
class Windows:
    """What a run trains on, in memory: standardised features ``(n, bands, frames)``, species indices ``(n,)``, and
    how the windows continue one another (for a random crop; None without)."""

    x: np.ndarray
    y: np.ndarray
    chain: WindowChain | None = None


def train_model(
    features_dir: str | os.PathLike[str],
    model_name: str,
    loss: dict[str, Any] | None,
    config: TrainConfig,
    callbacks: Sequence[Callable[[EpochStats], None]] = (),
    log: Callable[[str], None] | None = print,
    state_dir: str | os.PathLike[str] | None = None,
    code: Sequence[str | os.PathLike[str]] = (),
    augment: AugmentConfig | None = None,
    thresholds: dict[str, Any] | None = None,
) -> TrainedRun:
    """Train ``model_name`` on the training split, early-stopped on the validation split.

    With ``state_dir`` the run saves its state there after each epoch and resumes from it (see
    :mod:`speciesclf.training.checkpoint`); ``code`` names source files beyond this package (the stage script)
    whose change must invalidate it. ``augment`` transforms each training batch (none by default; a run with it
    records it in its card). ``thresholds`` (:func:`speciesclf.thresholds.fit_thresholds`' keywords): per-species
    detection thresholds fitted on the validation windows go into the card. Under DDP
    (:mod:`speciesclf.training.distributed`) every rank calls this and trains in step.
    """
    store = FeatureStore(features_dir)
    facts = store.facts
    x_train, y_train, _ = store.load_split("train")
    x_val, y_val, _ = store.load_split("val")
    chain = _window_chain(store) if augment is not None and augment.random_crop else None
    fingerprint_of = functools.partial(_fingerprint, features_dir=store.path, code=code)
    run = train_windows(
        Windows(x_train, y_train, chain),
        Windows(x_val, y_val),
        facts,
        model_name,
        loss,
        config,
        callbacks=callbacks,
        log=log,
        state=(state_dir, fingerprint_of) if state_dir is not None else None,
        augment=augment,
    )
    if thresholds is None:
        return run
    fitted = fit_thresholds(window_proba(run.network, x_val, batch_size=256), y_val, facts.species, **thresholds)
    return replace(run, card={**run.card, "thresholds": fitted})


def train_windows(
    train: Windows,
    val: Windows | None,
    facts: StoreFacts,
    model_name: str,
    loss: dict[str, Any] | None,
    config: TrainConfig,
    *,
    callbacks: Sequence[Callable[[EpochStats], None]] = (),
    log: Callable[[str], None] | None = print,
    state: tuple[str | os.PathLike[str], Callable[[dict[str, Any]], str]] | None = None,
    augment: AugmentConfig | None = None,
) -> TrainedRun:
    """Train ``model_name`` on in-memory windows: early-stopped on ``val``, or every epoch and the last one kept
    when ``val`` is None (as cross-validation trains). ``state``: the folder for per-epoch state and how to
    fingerprint the run for it."""
    torch.manual_seed(config.seed)  # weight initialisation
    network = build_model(model_name, n_classes=len(facts.species))
    loss_fn = build_loss(loss, facts.train_counts)
    if augment is not None:
        augment.check_front_end(facts.features["front_end"])
    decibels = _decibel_scale(facts.norm) if augment is not None and augment.in_decibels else None
    trainer = Trainer(network, loss_fn, config, callbacks=callbacks, log=log, augment=augment, decibels=decibels)
    saved = None
    if state is not None:
        run = {"model": model_name, "loss": loss, "train": asdict(config), "device": str(trainer.device)}
        run |= _augmented(augment)
        saved = TrainingState(state[0], state[1](run), log=log)
    x_val, y_val = (val.x, val.y) if val is not None else (None, None)
    result = trainer.fit(train.x, train.y, x_val, y_val, state=saved, chain=train.chain)
    card = _card(model_name, facts, loss, config, augment, result)
    return TrainedRun(
        trainer.model,
        card,
        result.train_seconds,
        result.device,
        saved,
        resources(model_name, trainer.model, config, result),
    )


def _card(
    model_name: str,
    facts: StoreFacts,
    loss: dict[str, Any] | None,
    config: TrainConfig,
    augment: AugmentConfig | None,
    result: TrainResult,
) -> dict[str, Any]:
    """model.json: what the model is and how it was trained, reproducible facts only (see speciesclf.models.saved)."""
    return {
        "model": model_name,
        "species": facts.species,
        "train_counts": facts.train_counts,
        "features": facts.features,
        "norm": facts.norm,
        **({"pretrained": facts.pretrained} if facts.pretrained is not None else {}),
        "loss": loss if loss is not None else {"name": "cross_entropy"},
        "train": asdict(config),
        **_augmented(augment),
        "precision": result.precision,
        "world_size": result.world_size,  # training processes (DDP); the effective batch is batch_size times this
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "best_val_f1_macro": result.best_val_f1_macro,
        **({"diverged": result.diverged} if result.diverged is not None else {}),  # absent from a stable run's card
        # wall-clock seconds and memory vary run to run: they stay out of the card
        "history": [_epoch_facts(h) for h in result.history],
    }


def _epoch_facts(stats: EpochStats) -> dict[str, Any]:
    """One epoch for the card: no wall-clock or memory; a score never measured (no validation set) is null."""
    facts = {k: v for k, v in asdict(stats).items() if k not in ("seconds", "peak_memory_mb")}
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in facts.items()}


def _augmented(augment: AugmentConfig | None) -> dict[str, Any]:
    """A run's augmentation, for its card and training state; absent when off (the study's runs keep their cards)."""
    return {"augment": asdict(augment)} if augment is not None and augment.enabled else {}


def resources(model_name: str, network: nn.Module, config: TrainConfig, result: TrainResult) -> dict[str, Any]:
    """What a run took, for its metrics (wall-clock and memory vary run to run: never in the model's card).

    ``peak_memory_mb`` is the process's peak resident set on CPU, CUDA's max allocated on a GPU (per process
    under DDP: rank 0's); ``seconds_per_epoch`` the mean over the epochs trained (validation included).
    """
    history = result.history
    return {
        "model": model_name,
        "parameters": sum(p.numel() for p in network.parameters() if p.requires_grad),
        "device": result.device,
        "precision": result.precision,
        "batch_size": config.batch_size,
        "processes": result.world_size,
        "peak_memory_mb": max((h.peak_memory_mb for h in history), default=None),
        "memory": "CUDA max allocated" if result.device.startswith("cuda") else "process peak RSS",
        "seconds_per_epoch": sum(h.seconds for h in history) / len(history) if history else None,
    }


def _decibel_scale(norm: dict[str, Any]) -> DecibelScale:
    """The training normalisation of log-mel features, for gain and background augmentation."""
    return DecibelScale(torch.tensor(norm["mean"]), torch.tensor(norm["std"]))


def _window_chain(store: FeatureStore) -> WindowChain:
    """How the training windows continue one another, for a random crop."""
    return WindowChain.from_windows(*store.window_positions("train"), store.config.train_hop_frames)


def _fingerprint(run: dict[str, Any], features_dir: Path, code: Sequence[str | os.PathLike[str]]) -> str:
    """What a saved training state must match: the run, the features, the code, and what changes float results."""
    numerics = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "world_size": distributed.current().size,
    }
    files = [p for p in features_dir.rglob("*") if p.is_file()] + code_files() + [Path(c) for c in code]
    return fingerprint({**run, **numerics}, files)
