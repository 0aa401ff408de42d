"""A trained model on disk, and back: everything prediction needs, without the training code.

A model directory holds ``model.pt`` (the weights, on the CPU, so any machine can load them) and ``model.json``:
the network's name, the species in output order, the feature settings and the training-split normalisation
(the preprocessor travels with the model), plus how it was trained. ``model.json`` holds no wall-clock times, so
identical runs give identical bytes.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speciesclf.features.mfcc import FeatureConfig, Standardizer
from speciesclf.files import atomic_path, read_json, write_json
from speciesclf.models.cnn import build_model

__all__ = ["SavedModel", "load_model", "load_weights", "save_model", "save_weights"]

WEIGHTS, CARD = "model.pt", "model.json"


@dataclass(frozen=True)
class SavedModel:
    network: nn.Module  # in eval mode, on the CPU
    species: list[str]
    features: FeatureConfig
    norm: Standardizer
    card: dict[str, Any]  # the whole model.json


def save_weights(model: nn.Module, path: str | os.PathLike[str], **meta: Any) -> None:
    """Weights (on the CPU) plus small metadata, written whole."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # serialise in memory: saving to the temp path would embed its random name in the archive, changing bytes
    buf = io.BytesIO()
    torch.save({"model_state": state, **meta}, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def load_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def save_model(model_dir: str | os.PathLike[str], network: nn.Module, card: dict[str, Any]) -> None:
    """``model.pt`` and ``model.json`` into ``model_dir``; ``card`` needs at least ``model``, ``species``,
    ``features``, ``norm`` and ``best_epoch``."""
    model_dir = Path(model_dir)
    save_weights(network, model_dir / WEIGHTS, best_epoch=card["best_epoch"])
    write_json(model_dir / CARD, card)


def load_model(model_dir: str | os.PathLike[str]) -> SavedModel:
    """The trained network (eval mode, CPU) with its species, feature settings and normalisation."""
    model_dir = Path(model_dir)
    card = read_json(model_dir / CARD)
    network = build_model(card["model"], n_classes=len(card["species"]))
    network.load_state_dict(load_weights(model_dir / WEIGHTS)["model_state"])
    return SavedModel(
        network=network.eval(),
        species=card["species"],
        features=FeatureConfig.from_dict(card["features"]),
        norm=Standardizer.from_dict(card["norm"]),
        card=card,
    )
