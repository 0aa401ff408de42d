"""One run of the study, from the feature store to a trained model: the work of the training stages."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speciesclf.choices import LOSSES
from speciesclf.features.store import PRETRAINED, load_split, window_positions
from speciesclf.files import read_json
from speciesclf.models.cnn import build_model
from speciesclf.models.losses import BalancedSoftmaxLoss, ClassWeightedCrossEntropy, FocalLoss, LogitAdjustedLoss
from speciesclf.training import distributed
from speciesclf.training.augment import AugmentConfig, DecibelScale, WindowChain
from speciesclf.training.checkpoint import TrainingState, code_files, fingerprint
from speciesclf.training.trainer import EpochStats, TrainConfig, Trainer, TrainResult

__all__ = ["TrainedRun", "build_loss", "resources", "train_model"]


@dataclass(frozen=True)
class TrainedRun:
    network: nn.Module  # with the best epoch's weights
    card: dict[str, Any]  # model.json: reproducible facts only (see speciesclf.models.saved)
    train_seconds: float
    device: str
    state: TrainingState | None = None  # the per-epoch state: discard it once the model is saved
    resources: dict[str, Any] = field(default_factory=dict)  # what the run took (see :func:`resources`)


def build_loss(loss: dict[str, Any] | None, train_counts: Sequence[int]) -> nn.Module:
    """The training loss a ``loss`` params mapping names; ``None`` → cross-entropy (the study's baseline).

    ``name`` (default ``focal``, the study's Phases 2A/2B) is one of :data:`LOSSES`; each reads its own keys, and
    every one reads ``label_smoothing``: ``focal`` γ ``gamma``, ``alpha`` (a number, ``'balanced'`` for Cui et al.
    weights with ``beta``, or null); ``class_weighted`` (Phase 1) ``power`` of the inverse class frequency;
    ``logit_adjusted`` (Menon et al. 2021) ``tau``; ``balanced_softmax`` (Ren et al. 2020) none. The class
    frequencies are ``train_counts``, the training windows per species.
    """
    if loss is None:
        return nn.CrossEntropyLoss()
    name = loss.get("name", "focal")
    smoothing = float(loss.get("label_smoothing", 0.0))
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=smoothing)
    if name == "class_weighted":
        return ClassWeightedCrossEntropy(train_counts, power=float(loss.get("power", 1.0)), label_smoothing=smoothing)
    if name == "logit_adjusted":
        return LogitAdjustedLoss(train_counts, tau=float(loss.get("tau", 1.0)), label_smoothing=smoothing)
    if name == "balanced_softmax":
        return BalancedSoftmaxLoss(train_counts, label_smoothing=smoothing)
    if name != "focal":
        raise ValueError(f"loss.name: got {name!r}; expected one of {', '.join(LOSSES)}")
    common = {"gamma": float(loss["gamma"]), "label_smoothing": smoothing}
    if loss.get("alpha") == "balanced":
        return FocalLoss.balanced(train_counts, beta=float(loss.get("beta", 0.999)), **common)
    alpha = loss.get("alpha")
    return FocalLoss(alpha=None if alpha is None else float(alpha), **common)


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
) -> TrainedRun:
    """Train ``model_name`` on the training split, early-stopped on the validation split.

    With ``state_dir`` the run saves its state there after each epoch and resumes from it (see
    :mod:`speciesclf.training.checkpoint`); ``code`` names source files beyond this package (the stage script)
    whose change must invalidate it. ``augment`` transforms each training batch (none by default; a run with it
    records it in its card). Under DDP (:mod:`speciesclf.training.distributed`) every rank calls this and
    trains in step.
    """
    features_dir = Path(features_dir)
    labels = read_json(features_dir / "labels.json")
    x_train, y_train, _ = load_split(features_dir, "train")
    x_val, y_val, _ = load_split(features_dir, "val")
    torch.manual_seed(config.seed)  # weight initialisation
    network = build_model(model_name, n_classes=len(labels["species"]))
    loss_fn = build_loss(loss, labels["train_counts"])
    if augment is not None:
        augment.check_front_end(read_json(features_dir / "features.json")["front_end"])
    decibels = _decibel_scale(features_dir) if augment is not None and augment.in_decibels else None
    trainer = Trainer(network, loss_fn, config, callbacks=callbacks, log=log, augment=augment, decibels=decibels)
    state = None
    if state_dir is not None:
        run = {"model": model_name, "loss": loss, "train": asdict(config), "device": str(trainer.device)}
        run |= _augmented(augment)
        state = TrainingState(state_dir, _fingerprint(run, features_dir, code), log=log)
    chain = _window_chain(features_dir) if augment is not None and augment.random_crop else None
    result = trainer.fit(x_train, y_train, x_val, y_val, state=state, chain=chain)
    card = _card(model_name, labels, features_dir, loss, config, augment, result)
    return TrainedRun(
        trainer.model,
        card,
        result.train_seconds,
        result.device,
        state,
        resources(model_name, trainer.model, config, result),
    )


def _card(
    model_name: str,
    labels: dict[str, Any],
    features_dir: Path,
    loss: dict[str, Any] | None,
    config: TrainConfig,
    augment: AugmentConfig | None,
    result: TrainResult,
) -> dict[str, Any]:
    """model.json: what the model is and how it was trained, reproducible facts only (see speciesclf.models.saved)."""
    return {
        "model": model_name,
        "species": labels["species"],
        "train_counts": labels["train_counts"],
        "features": read_json(features_dir / "features.json"),
        "norm": read_json(features_dir / "norm.json"),
        **_pretrained(features_dir),
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
        "history": [
            {k: v for k, v in asdict(h).items() if k not in ("seconds", "peak_memory_mb")} for h in result.history
        ],
    }


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


def _pretrained(features_dir: Path) -> dict[str, Any]:
    """The pretrained model that made the features, if one did (so a card says which BirdNET its head needs)."""
    path = features_dir / PRETRAINED
    return {"pretrained": read_json(path)} if path.exists() else {}


def _decibel_scale(features_dir: Path) -> DecibelScale:
    """The training normalisation of log-mel features, for gain and background augmentation."""
    norm = read_json(features_dir / "norm.json")
    return DecibelScale(torch.tensor(norm["mean"]), torch.tensor(norm["std"]))


def _window_chain(features_dir: Path) -> WindowChain:
    """How the training windows continue one another, for a random crop: the training hop in frames."""
    feats = read_json(features_dir / "features.json")
    hop_frames = round(feats["train_hop_seconds"] * feats["sample_rate"] / feats["hop_length"])
    return WindowChain.from_windows(*window_positions(features_dir, "train"), hop_frames)


def _fingerprint(run: dict[str, Any], features_dir: Path, code: Sequence[str | os.PathLike[str]]) -> str:
    """What a saved training state must match: the run, the features, the code, and what changes float results."""
    numerics = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "world_size": distributed.current().size,
    }
    files = [p for p in features_dir.rglob("*") if p.is_file()] + code_files() + [Path(c) for c in code]
    return fingerprint({**run, **numerics}, files)
