"""Score trained models on a split of the feature store: window level and recording level.

A run is scored by :func:`evaluate_model`; several runs by :func:`evaluate_ensemble`, which averages their window
probabilities (each member on its own feature store, so members may differ in front end) and scores the mean like
one run. Both go through :func:`score_probabilities`, so an ensemble is judged exactly as a single model is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speciesclf.evaluation.metrics import HEADLINE, classification_metrics, per_class_table
from speciesclf.evaluation.stability import stability
from speciesclf.features.store import FeatureStore
from speciesclf.files import atomic_dir, read_json, write_json
from speciesclf.models.inference import probabilities, window_logits
from speciesclf.models.losses import adjust_logits
from speciesclf.models.saved import CARD, SavedModel, load_model

__all__ = [
    "EnsembleError",
    "Member",
    "ScoreFolders",
    "average_members",
    "evaluate_ensemble",
    "evaluate_model",
    "feature_store_of",
    "same_species",
    "save_scores",
    "score_probabilities",
    "validation_scores",
    "window_probabilities",
]

WALL_CLOCK = ("train_seconds", "resources")  # metrics that vary run to run: kept out of the hashed scores.json


class EnsembleError(ValueError):
    """Members that cannot be averaged; ``str()`` names the run and what was expected."""


@dataclass(frozen=True)
class Member:
    """One run of an ensemble: its name (for messages), its model folder and the feature store it reads."""

    run: str
    model_dir: Path
    features_dir: Path


@dataclass(frozen=True)
class _Windows:
    proba: np.ndarray  # (windows, species) float64
    y: np.ndarray  # (windows,) species index
    recordings: list[str]  # (windows,) the recording each window was cut from


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


def window_probabilities(
    model: SavedModel, features_dir: Path, split: str, batch_size: int = 256, tau: float = 0.0
) -> _Windows:
    """A model's species probabilities for each window of ``split`` in a feature store, post-hoc logit-adjusted by
    ``tau`` (:func:`speciesclf.models.losses.adjust_logits`; 0: the network's own logits)."""
    store = FeatureStore(features_dir)
    if store.species != model.species:
        raise ValueError(f"{features_dir}: its species list differs from the one the model was trained on")
    x, y, recordings = store.load_split(split)
    logits = window_logits(model.network, x, batch_size).double()
    if tau:  # adjusted in float64, before the softmax
        logits = adjust_logits(logits, model.card["train_counts"], tau)
    return _Windows(probabilities(logits), np.asarray(y), list(recordings))


def score_probabilities(
    windows: _Windows,
    species: list[str],
    train_counts: Sequence[int],
    rare_threshold: int,
    history: Sequence[dict[str, Any]] | None = None,
    diverged: str | None = None,
) -> dict[str, Any]:
    """Window- and recording-level metrics, the stability verdict (``history``: the run's epochs, None for an
    ensemble; ``diverged``: where its training loss turned non-finite), the per-species table and the confusion
    pairs of some probabilities."""
    proba, y = windows.proba, windows.y
    rec_proba, rec_y = _recording_level(proba, y, windows.recordings)
    recording = classification_metrics(rec_y, rec_proba, train_counts, rare_threshold)
    return {
        "window": classification_metrics(y, proba, train_counts, rare_threshold),
        "recording": {**recording, "n_recordings": len(rec_y)},
        "stability": stability(y, proba.argmax(1), history, diverged),
        "per_class": per_class_table(y, proba, species, train_counts),
        "confusion": [{"actual": species[a], "predicted": species[p]} for a, p in zip(y, proba.argmax(1), strict=True)],
    }


def evaluate_model(
    model_dir: str | os.PathLike[str],
    features_dir: str | os.PathLike[str],
    rare_threshold: int,
    split: str = "test",
    batch_size: int = 256,
    tau: float = 0.0,
    model: SavedModel | None = None,
) -> dict[str, Any]:
    """Window- and recording-level metrics on ``split``, the per-species table, confusion pairs, training facts;
    ``tau`` > 0 scores post-hoc logit-adjusted probabilities (:func:`window_probabilities`). ``model``: the one in
    ``model_dir`` if already loaded (scoring a second split then loads it once)."""
    model = model or load_model(model_dir)
    try:
        windows = window_probabilities(model, Path(features_dir), split, batch_size, tau)
    except ValueError as exc:
        raise ValueError(f"{model_dir}: {exc}") from None
    card = model.card
    scores = score_probabilities(
        windows, model.species, card["train_counts"], rare_threshold, card["history"], card.get("diverged")
    )
    training = ("best_epoch", "epochs_run", "stopped_early", "best_val_f1_macro")  # validation: what choices use
    return {**scores, "training": {k: card[k] for k in training}}


def validation_scores(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The headline scores of a result on the validation split, window and recording level: what a choice
    between runs (an ensemble or its best member, one recipe or another) may look at; test never."""
    return {level: {k: result[level][k] for k in ("accuracy", "f1_macro")} for level in ("window", "recording")}


def feature_store_of(model_dir: str | os.PathLike[str], stores: Sequence[str | os.PathLike[str]]) -> Path:
    """The first of ``stores`` made with the feature settings in the model's card (a model is only valid on
    features made as its training features were)."""
    wanted = read_json(Path(model_dir) / CARD)["features"]
    for store in map(Path, stores):
        if FeatureStore(store).features == wanted:
            return store
    names = ", ".join(str(s) for s in stores)
    raise EnsembleError(f"{model_dir}: none of the feature stores {names} has its features ({wanted})")


def evaluate_ensemble(
    members: Sequence[Member],
    rare_threshold: int,
    split: str = "test",
    batch_size: int = 256,
    tau: float = 0.0,
    models: Sequence[SavedModel] | None = None,
) -> dict[str, Any]:
    """Score the mean of the members' window probabilities (equal weights, each logit-adjusted by ``tau``) like one
    run; ``averaged`` in the result says at which level.

    Members must share the species list (in order); their front ends and networks may differ. Members that cut
    the same windows are averaged window by window (``averaged: window``). Members that cut other windows (another
    clip length, as a pretrained front end's fixed window beside a spectrogram CNN) are averaged recording by
    recording, each member's recording probability being the mean of its windows' (``averaged: recording``; the
    result's window-level scores are then per recording too). ``models``: the members' models if already loaded.
    Raises :class:`EnsembleError` naming the first member that does not fit.
    """
    if len(members) < 2:
        raise EnsembleError(f"an ensemble needs at least 2 runs, got {len(members)}")
    models = models or [load_model(m.model_dir) for m in members]
    same_species(members, models)
    pairs = zip(members, models, strict=True)
    windows = [window_probabilities(model, member.features_dir, split, batch_size, tau) for member, model in pairs]
    mean, level = average_members(members, windows, split)
    train_counts = models[0].card["train_counts"]
    return {**score_probabilities(mean, models[0].species, train_counts, rare_threshold), "averaged": level}


def same_species(members: Sequence[Member], models: Sequence[SavedModel]) -> None:
    """Raise :class:`EnsembleError` naming the first member trained on another species list than the first's."""
    for member, model in zip(members, models, strict=True):
        if model.species != models[0].species:
            raise EnsembleError(f"ensemble: run {member.run} was trained on other species than run {members[0].run}")


def average_members(members: Sequence[Member], windows: Sequence[_Windows], split: str) -> tuple[_Windows, str]:
    """The mean of the members' probabilities (:func:`window_probabilities`) and the level it was taken at:
    ``window`` where all cut the same windows, else ``recording`` (see :func:`evaluate_ensemble`)."""
    level = "window" if all(_same(w, windows[0]) for w in windows) else "recording"
    if level == "recording":
        windows = [_per_recording(w) for w in windows]
    for member, w in zip(members, windows, strict=True):
        if not _same(w, windows[0]):
            raise EnsembleError(f"ensemble: run {member.run} scores other {split} recordings than run {members[0].run}")
    return _Windows(sum(w.proba for w in windows) / len(windows), windows[0].y, windows[0].recordings), level


def _same(a: _Windows, b: _Windows) -> bool:
    return a.recordings == b.recordings and np.array_equal(a.y, b.y)


def _per_recording(w: _Windows) -> _Windows:
    """One row per recording, in sorted order: the mean of its windows' probabilities."""
    proba, y = _recording_level(w.proba, w.y, w.recordings)
    first_seen = list(dict.fromkeys(w.recordings))
    order = sorted(range(len(first_seen)), key=first_seen.__getitem__)
    return _Windows(proba[order], y[order], [first_seen[i] for i in order])


@dataclass(frozen=True)
class ScoreFolders:
    """Where runs' scores go, one tree per kind of file, each run at ``<root>/<run>/`` (``dvc.yaml`` gives the roots).

    One kind per tree, because ``dvc plots show`` plots every file under a folder with one template: so the
    per-species F1 and the confusion matrices of every run, each γ and seed included, need no list in dvc.yaml.
    """

    scores: Path  # scores.json: the metrics without wall-clock facts (hashed by DVC: a change re-runs the report)
    per_class: Path  # per_class.json: the per-species table (a bar plot of F1)
    confusion: Path  # confusion.json: (actual, predicted) per test window (a confusion matrix)
    metrics: Path  # <run>.json: everything, the file `dvc metrics` reads (git-tracked)


def save_scores(result: dict[str, Any], run: str, folders: ScoreFolders, **facts: Any) -> dict[str, Any]:
    """Write a run's scores into ``folders``; returns what went to its metrics file.

    The metrics file holds the headline window-level scores at the top, then ``facts`` (training facts, members),
    ``stability`` (:mod:`speciesclf.evaluation.stability`), ``window`` and ``recording``; ``scores.json`` the same
    without the wall-clock :data:`WALL_CLOCK` (so identical runs hash the same). Each folder is written whole.
    """
    window = result["window"]
    metrics = {
        **{k: window[k] for k in HEADLINE},
        "n_test": window["n_test"],
        **facts,
        "stability": result["stability"],
        "window": window,
        "recording": result["recording"],
    }
    files = [
        (folders.scores, "scores.json", {k: v for k, v in metrics.items() if k not in WALL_CLOCK}),
        (folders.per_class, "per_class.json", result["per_class"]),
        (folders.confusion, "confusion.json", result["confusion"]),
    ]
    for root, name, content in files:
        with atomic_dir(Path(root) / run) as out:
            write_json(out / name, content)
    write_json(Path(folders.metrics) / f"{run}.json", metrics)
    return metrics
