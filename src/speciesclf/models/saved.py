"""A trained model on disk, and back: everything prediction needs, without the training code.

A model directory holds ``model.pt`` (the weights, on the CPU, so any machine can load them) and ``model.json``:
the network's name, the species in output order, the feature settings and the training-split normalisation
(the preprocessor travels with the model), plus how it was trained. ``model.json`` holds no wall-clock times, so
identical runs give identical bytes.

An ensemble's directory (what ``select`` writes) holds ``model.json`` naming its members and one such model
directory per member under ``members/``; each member keeps its own front end, time expansion and normalisation,
and the ensemble's probability of a recording is the mean of its members'.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speciesclf.features.config import FeatureConfig, Standardizer
from speciesclf.files import atomic_path, read_json, write_json
from speciesclf.models.cnn import build_model

__all__ = [
    "MEMBERS",
    "SavedModel",
    "WeightsError",
    "load_members",
    "load_model",
    "load_weights",
    "save_ensemble",
    "save_model",
    "save_weights",
]

WEIGHTS, CARD, MEMBERS = "model.pt", "model.json", "members"


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


class WeightsError(ValueError):
    """``model.pt`` cannot be read, or does not hold the weights its ``model.json`` describes; names the file."""

    def __init__(self, path: Path, exc: BaseException) -> None:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        super().__init__(f"{path}: unreadable, or not the weights model.json describes ({detail})")


def load_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    # a zip cut inside an entry makes torch raise a bare OSError, "[Errno 22] Invalid argument", naming no file
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise WeightsError(Path(path), exc) from None


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
    weights = load_weights(model_dir / WEIGHTS)
    try:
        network.load_state_dict(weights["model_state"])
    except (RuntimeError, KeyError, TypeError) as exc:  # another network's weights, or no state in the file
        raise WeightsError(model_dir / WEIGHTS, exc) from None
    return SavedModel(
        network=network.eval(),
        species=card["species"],
        features=FeatureConfig.from_dict(card["features"]),
        norm=Standardizer.from_dict(card["norm"]),
        card=card,
    )


def save_ensemble(
    model_dir: str | os.PathLike[str], members: dict[str, tuple[nn.Module, dict[str, Any]]], card: dict[str, Any]
) -> None:
    """Each member (name → network and card) as a model directory under ``members/``, and ``model.json``: ``card``
    plus the members' names and their shared species list."""
    model_dir = Path(model_dir)
    species = {tuple(c["species"]) for _, c in members.values()}
    if len(species) != 1:
        raise ValueError(f"{model_dir}: an ensemble's members must share one species list")
    for name, (network, member_card) in members.items():
        save_model(model_dir / MEMBERS / name, network, member_card)
    write_json(model_dir / CARD, {**card, "species": list(species.pop()), "members": list(members)})


def load_members(model_dir: str | os.PathLike[str]) -> list[SavedModel]:
    """The models a model directory holds: itself, or an ensemble's members (checked to share their species)."""
    model_dir = Path(model_dir)
    card = read_json(model_dir / CARD)
    if MEMBERS not in card:
        return [load_model(model_dir)]
    members = [load_model(model_dir / MEMBERS / name) for name in card[MEMBERS]]
    for name, member in zip(card[MEMBERS], members, strict=True):
        if member.species != card["species"]:
            raise ValueError(f"{model_dir / MEMBERS / name / CARD}: species differ from the ensemble's {CARD}")
    return members
