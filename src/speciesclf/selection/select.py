"""Choose a collection's model by cross-validation, train it on train + validation, score test once.

The work of the ``select`` stage, given a prepared collection (its manifest) and a recipe
(:mod:`speciesclf.selection.recipe`):

1. The train and validation recordings are pooled and dealt into k folds, grouped by recording and stratified by
   species (:mod:`speciesclf.selection.folds`). Test recordings are not read until step 4.
2. For each fold, every candidate is trained at each of its seeds on the other folds' windows (normalisation
   fitted on them alone) for the recipe's epochs, the last epoch kept: the held-out fold chooses nothing, not even
   the epoch. It then scores the held-out fold's recordings: the mean of each recording's window probabilities.
3. A candidate's probability of a recording is the mean over its models (its seeds; an average's, all the seeds
   of all its candidates, each model weighing the same); its score on a fold is recording-level accuracy and
   macro-F1. The candidate with the best mean over the folds of ``choose_by`` is chosen (the first listed on a tie).
4. The chosen candidate's models are trained again on all train + validation recordings and written as one model
   directory (an ensemble's members under ``members/``, see :mod:`speciesclf.models.saved`). Test is then scored
   once, through :class:`speciesclf.predictor.Predictor`, the code ``speciesclf predict`` runs, so that predict on
   the test recordings gives exactly the reported scores.

The chosen model's per-species detection thresholds (:mod:`speciesclf.thresholds`) are fitted on its out-of-fold
window scores from step 2 (windows of recordings no model of that fold learnt from) and go into its ``model.json``;
an average of candidates that cut different windows gets none (``predict`` then applies one global threshold).
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speciesclf.data.manifest import read_manifest
from speciesclf.evaluation.metrics import classification_metrics
from speciesclf.features.birdnet import BirdNETError, pretrained
from speciesclf.features.config import FeatureConfig, Standardizer
from speciesclf.features.store import StoreFacts, recording_features
from speciesclf.models.inference import window_proba
from speciesclf.models.saved import save_ensemble, save_model
from speciesclf.predictor import Predictor
from speciesclf.selection.folds import recording_folds
from speciesclf.selection.recipe import Candidate, Recipe, RecipeError
from speciesclf.thresholds import fit_thresholds
from speciesclf.training.augment import AugmentConfig, WindowChain
from speciesclf.training.config import TrainConfig
from speciesclf.training.run import Windows, train_windows

__all__ = ["Pool", "select"]

SCORES = ("accuracy", "f1_macro")


@dataclass(frozen=True)
class Pool:
    """Recordings of some splits: each one's species index and audio files (a recording may be several files)."""

    ids: list[str]
    y: np.ndarray  # (recordings,) species index
    files: list[list[Path]]

    @classmethod
    def of(cls, manifest: Path, splits: Sequence[str], index: dict[str, int]) -> Pool:
        by_id: dict[str, tuple[str, list[Path]]] = {}
        for clip in read_manifest(manifest):
            if clip.split in splits:
                path = Path(clip.path) if Path(clip.path).is_absolute() else manifest.parent / clip.path
                by_id.setdefault(clip.recording_id, (clip.label, []))[1].append(path)
        ids = list(by_id)
        return cls(ids, np.asarray([index[by_id[r][0]] for r in ids], dtype=np.int64), [by_id[r][1] for r in ids])


@dataclass(frozen=True)
class _Features:
    """One feature setting's windows of every pool file: cut every training hop, and every clip (scored)."""

    config: FeatureConfig
    train: list[np.ndarray]  # per file
    scored: list[np.ndarray]  # per file
    recording: np.ndarray  # (files,) the pool index of each file's recording


def select(
    manifest: Path,
    recipe: Recipe,
    rare_threshold: int,
    out_dir: Path,
    log: Callable[[str], None] = print,
    thresholds: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Cross-validate the recipe's candidates, write the chosen model to ``out_dir``; returns the metrics.
    ``thresholds``: :func:`speciesclf.thresholds.fit_thresholds`' keywords (none fitted without).

    With ``repeats: n`` in the recipe the whole selection runs n times on the same features, repeat r with the
    folds shuffled by ``seed + r`` and every model seed moved by ``1000 * r``; the first repeat's model is the one
    written, the others' test scores give the spread of what the recipe yields."""
    species = sorted({c.label for c in read_manifest(manifest) if c.split == "train"})
    index = {s: i for i, s in enumerate(species)}
    pool, test = Pool.of(manifest, ("train", "val"), index), Pool.of(manifest, ("test",), index)
    folds = [_folds(pool, species, recipe, recipe.seed + r) for r in range(recipe.repeats)]  # before any work
    candidates, left_out = _available(recipe, log)
    features = _featurize(pool, candidates)
    runs = []
    for r in range(recipe.repeats):
        with contextlib.ExitStack() as stack:
            where = out_dir if r == 0 else Path(stack.enter_context(tempfile.TemporaryDirectory()))
            moved = {n: replace(c, seeds=tuple(s + 1000 * r for s in c.seeds)) for n, c in candidates.items()}
            run = _select_once(
                pool, test, folds[r], species, moved, features, recipe, (rare_threshold, thresholds), where, log
            )
            runs.append({"seed": recipe.seed + r, **run})
    metrics = {
        "recipe": recipe.path.as_posix(),
        "folds": recipe.folds,
        "choose_by": recipe.choose_by,
        "recordings": {"cross_validated": len(pool.ids), "test": len(test.ids)},
        **runs[0],
        "left_out": left_out,
    }
    if recipe.repeats > 1:
        metrics["repeats"] = [{k: run[k] for k in ("seed", "chosen", "cross_validated", "test")} for run in runs]
        metrics["test_over_repeats"] = {
            stat: {k: f(run["test"][k] for run in runs) for k in SCORES}
            for stat, f in (("mean", statistics.mean), ("sd", statistics.stdev))
        }
    return metrics


def _folds(pool: Pool, species: list[str], recipe: Recipe, seed: int) -> np.ndarray:
    """Each pool recording's fold, dealt with ``seed``; too many folds for the rarest species is the recipe's error."""
    try:
        return recording_folds([species[i] for i in pool.y], recipe.folds, seed)
    except ValueError as exc:
        raise RecipeError(f"{recipe.path}: folds: {exc}") from None


def _select_once(
    pool: Pool,
    test: Pool,
    folds: np.ndarray,
    species: list[str],
    candidates: dict[str, Candidate],
    features: dict[str, _Features],
    recipe: Recipe,
    rules: tuple[int, dict[str, Any] | None],
    out_dir: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """One selection on given folds: cross-validation, the choice, the chosen model trained on the pool and written,
    then test. ``rules``: the rare-species threshold of the scores and the detection thresholds' keywords."""
    rare_threshold, threshold_rule = rules
    windows = _cross_validate(pool, folds, candidates, features, recipe, species, log)
    probs = {m: np.stack([w.mean(axis=0) for w in ws]) for m, ws in windows.items()}  # a recording: its windows' mean
    groups = {name: (name,) for name in candidates}
    groups |= {" + ".join(a): a for a in recipe.averages if all(n in candidates for n in a)}
    table = {
        name: _fold_scores(pool, folds, probs, members, candidates, rare_threshold) for name, members in groups.items()
    }
    chosen = max(table, key=lambda name: table[name]["mean"][recipe.choose_by])
    log(f"select: chose {chosen} (cross-validated {recipe.choose_by} {table[chosen]['mean'][recipe.choose_by]:.3f})")
    members = {n: candidates[n] for n in groups[chosen]}
    fitted = None
    if threshold_rule is not None and len({_grid(features[n].config) for n in members}) == 1:
        fitted = _fit_thresholds(
            pool, windows, [(n, s) for n in members for s in candidates[n].seeds], species, threshold_rule
        )
    train_counts = _write_model(out_dir, pool, species, members, features, recipe, log, fitted)
    scores = _score_test(out_dir, test, train_counts, rare_threshold)
    log(f"select: test {', '.join(f'{k} {scores[k]:.3f}' for k in SCORES)}")
    return {"candidates": table, "chosen": chosen, "cross_validated": table[chosen]["mean"], "test": scores}


def _available(recipe: Recipe, log: Callable[[str], None]) -> tuple[dict[str, Candidate], dict[str, str]]:
    """The candidates this machine can train: a BirdNET one needs the optional extra."""
    candidates, left_out = {}, {}
    for name, c in recipe.candidates.items():
        if c.features["front_end"] == "birdnet":
            try:
                pretrained()
            except BirdNETError as exc:
                left_out[name] = str(exc)
                log(f"select: left out {name}: {exc}")
                continue
        candidates[name] = c
    if not candidates:
        raise RecipeError(f"{recipe.path}: candidates: none can be trained here ({'; '.join(left_out.values())})")
    return candidates, left_out


def _featurize(pool: Pool, candidates: dict[str, Candidate]) -> dict[str, _Features]:
    """Each candidate's features of the pool, computed once per distinct feature setting."""
    files = [f for fs in pool.files for f in fs]
    recording = np.asarray([i for i, fs in enumerate(pool.files) for _ in fs], dtype=np.int64)
    by_config: dict[FeatureConfig, _Features] = {}
    out = {}
    for name, c in candidates.items():
        config = FeatureConfig(**c.features)
        if config not in by_config:
            label = f"select: features of {name}"
            train = recording_features(files, config, config.train_hop_seconds, f"{label} (training windows)")
            scored = train
            if config.train_hop_seconds != config.clip_seconds:
                scored = recording_features(files, config, config.clip_seconds, f"{label} (scored windows)")
            by_config[config] = _Features(config, train, scored, recording)
        out[name] = by_config[config]
    return out


def _cross_validate(
    pool: Pool,
    folds: np.ndarray,
    candidates: dict[str, Candidate],
    features: dict[str, _Features],
    recipe: Recipe,
    species: list[str],
    log: Callable[[str], None],
) -> dict[tuple[str, int], list[np.ndarray]]:
    """(candidate, seed) → each pool recording's out-of-fold window probabilities ``(windows, species)``."""
    models = [(n, s) for n, c in candidates.items() for s in c.seeds]
    windows: dict[tuple[str, int], list[np.ndarray]] = {m: [np.empty(0)] * len(pool.ids) for m in models}
    for fold in range(recipe.folds):
        held_out = np.flatnonzero(folds == fold)
        for name, c in candidates.items():
            for seed in c.seeds:
                log(f"select: fold {fold + 1}/{recipe.folds}, {name}, seed {seed}")
                network, norm, _ = _train(c, seed, features[name], folds != fold, pool.y, species, recipe)
                for r in held_out:
                    windows[name, seed][r] = _window_proba(network, norm, features[name], r)
    return windows


def _grid(config: FeatureConfig) -> tuple[int, int]:
    """How a feature setting cuts a recording into scored windows: the read rate and the clip, in samples."""
    return config.read_rate, config.clip_samples


def _fit_thresholds(
    pool: Pool,
    windows: dict[tuple[str, int], list[np.ndarray]],
    models: list[tuple[str, int]],
    species: list[str],
    rule: dict[str, Any],
) -> dict[str, Any]:
    """Detection thresholds of the mean of ``models`` (one window grid), fitted on their out-of-fold windows."""
    proba = np.concatenate([np.mean([windows[m][r] for m in models], axis=0) for r in range(len(pool.ids))])
    y = np.concatenate([np.full(len(windows[models[0]][r]), pool.y[r]) for r in range(len(pool.ids))])
    return fit_thresholds(proba, y, species, **rule, fitted_on="out-of-fold windows")


def _train(
    c: Candidate, seed: int, feats: _Features, keep: np.ndarray, y: np.ndarray, species: list[str], recipe: Recipe
) -> tuple[torch.nn.Module, Standardizer, dict[str, Any]]:
    """A candidate's model at one seed, trained on the recordings ``keep`` (a pool mask): network, norm, card."""
    files = [i for i, r in enumerate(feats.recording) if keep[r]]
    x = np.concatenate([feats.train[i] for i in files])
    labels = np.concatenate([np.full(len(feats.train[i]), y[feats.recording[i]]) for i in files])
    norm = Standardizer.fit(x)
    counts = np.bincount(labels, minlength=len(species)).tolist()
    facts = StoreFacts(species, counts, feats.config.to_dict(), norm.to_dict(), _pretrained(feats))
    augment = AugmentConfig(**c.augment)
    chain = None
    if augment.random_crop:
        names = [str(i) for i in files for _ in range(len(feats.train[i]))]
        positions = [k for i in files for k in range(len(feats.train[i]))]
        chain = WindowChain.from_windows(names, positions, feats.config.train_hop_frames)
    train = {k: v for k, v in recipe.train.items() if k not in ("threads", "processes")}
    config = TrainConfig(**train, seed=seed)
    run = train_windows(
        Windows(norm(x), labels, chain), None, facts, c.model, c.loss, config, log=None, augment=augment
    )
    return run.network.eval(), norm, run.card


def _pretrained(feats: _Features) -> dict[str, Any] | None:
    return pretrained() if feats.config.front_end == "birdnet" else None


def _window_proba(network: torch.nn.Module, norm: Standardizer, feats: _Features, recording: int) -> np.ndarray:
    """``(windows, species)`` probabilities of one pool recording's scored windows."""
    x = np.concatenate([feats.scored[i] for i in np.flatnonzero(feats.recording == recording)])
    return window_proba(network, norm(x), batch_size=256)  # norm is elementwise: whole or by batch, the same values


def _fold_scores(
    pool: Pool,
    folds: np.ndarray,
    probs: dict[tuple[str, int], np.ndarray],
    names: tuple[str, ...],
    candidates: dict[str, Candidate],
    rare_threshold: int,
) -> dict[str, Any]:
    """A candidate's (or an average's) scores on each fold, their mean and sample sd, and over all folds pooled."""
    models = [(n, s) for n in names for s in candidates[n].seeds]
    proba = np.mean([probs[m] for m in models], axis=0)  # every model weighs the same, as the Predictor averages
    counts = np.bincount(pool.y, minlength=proba.shape[1]).tolist()
    per_fold = []
    for fold in range(int(folds.max()) + 1):
        held = folds == fold
        m = classification_metrics(pool.y[held], proba[held], counts, rare_threshold)
        per_fold.append({k: m[k] for k in SCORES})
    pooled = classification_metrics(pool.y, proba, counts, rare_threshold)
    return {
        "members": [f"{n} seed {s}" for n, s in models],
        "folds": per_fold,
        "mean": {k: statistics.mean(f[k] for f in per_fold) for k in SCORES},
        "sd": {k: statistics.stdev(f[k] for f in per_fold) for k in SCORES},
        "pooled": {k: pooled[k] for k in SCORES},
    }


def _write_model(
    out_dir: Path,
    pool: Pool,
    species: list[str],
    members: dict[str, Candidate],
    features: dict[str, _Features],
    recipe: Recipe,
    log: Callable[[str], None],
    thresholds: dict[str, Any] | None,
) -> list[int]:
    """Train the chosen candidates' models on every pool recording and write them as one model directory (with
    ``thresholds``, if any, in its card); returns the training windows per species (of the first member: the
    rare-species rule of the test scores)."""
    everything = np.ones(len(pool.ids), dtype=bool)
    trained = {}
    for name, c in members.items():
        for seed in c.seeds:
            log(f"select: training {name}, seed {seed}, on all {len(pool.ids)} train + validation recordings")
            network, _, card = _train(c, seed, features[name], everything, pool.y, species, recipe)
            trained[f"{name}_seed{seed}"] = (network, card)
    first = next(iter(trained.values()))[1]
    fitted = {"thresholds": thresholds} if thresholds is not None else {}
    if len(trained) == 1:
        network, card = next(iter(trained.values()))
        save_model(out_dir, network, {**card, **fitted})
    else:
        card = {"model": "ensemble", "recipe": recipe.path.as_posix(), "candidates": list(members)}
        save_ensemble(out_dir, trained, {**card, "train_counts": first["train_counts"], **fitted})
    return first["train_counts"]


def _score_test(model_dir: Path, test: Pool, train_counts: list[int], rare_threshold: int) -> dict[str, Any]:
    """Recording-level test scores of the written model, computed as ``speciesclf predict`` computes them."""
    predictor = Predictor(model_dir)
    proba = []
    for files in test.files:
        per_member = [
            np.concatenate(p) for p in zip(*([w for w, _ in predictor.member_windows(f)] for f in files), strict=True)
        ]
        proba.append(np.mean([p.mean(axis=0) for p in per_member], axis=0))
    m = classification_metrics(test.y, np.stack(proba), train_counts, rare_threshold)
    keys = ("accuracy", "f1_macro", "balanced_accuracy", "f1_rare", "n_test")
    return {("n_recordings" if k == "n_test" else k): m[k] for k in keys}
