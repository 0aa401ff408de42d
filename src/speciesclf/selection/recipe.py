"""A recipe: the candidate runs ``select`` cross-validates on a collection, and how it chooses among them.

A recipe is a YAML file (``recipes/*.yaml``)::

    folds: 5                      # k of the cross-validation over the train + validation recordings
    seed: 42                      # the folds' shuffle
    choose_by: f1_macro           # f1_macro | accuracy: recording level, mean over the folds
    repeats: 1                    # run the whole selection this many times with other seeds: the spread
    train: {epochs: 25}           # params.yaml's train section, these keys replaced, for every candidate
    candidates:
      logmel:                     # a name of letters, digits, '_' and '-'
        features: {front_end: logmel, n_mels: 64}   # params.yaml's features, these keys replaced
        model: AudioCNNv3
        loss: {name: logit_adjusted, tau: 1.0}      # a loss of speciesclf.choices.LOSSES and the keys it reads
        augment: {freq_mask: 8, time_mask: 25}      # speciesclf.training.augment.AugmentConfig's keys
        seeds: [42, 43]           # one model per seed; the candidate is their mean
    averages:                     # further candidates: the mean of these candidates' probabilities
      - [logmel, birdnet_2.5]

A candidate on the ``birdnet`` front end needs the optional extra; without it, the candidate (and every average
holding it) is left out with a note, and the metrics list what was left out. Every key is checked before any work:
a bad one stops ``select`` with one line naming the recipe file and the key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from speciesclf.choices import LOSS_LIMITS, LOSSES
from speciesclf.limits import refusal
from speciesclf.params import ParamsError, check_features, check_given, check_section

__all__ = ["Candidate", "Recipe", "RecipeError", "load_recipe"]

CHOOSE_BY = ("f1_macro", "accuracy")
_TOP = {"folds", "seed", "choose_by", "repeats", "train", "candidates", "averages"}
_CANDIDATE = {"features", "model", "loss", "augment", "seeds"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RecipeError(ValueError):
    """A bad recipe; ``str()`` is the one line to show: the file, the key, what was expected."""


class _Bad(Exception):
    """A bad key, before the recipe's path is put in front of it."""

    def __init__(self, key: str, expected: str) -> None:
        super().__init__(f"{key}: {expected}")


@dataclass(frozen=True)
class Candidate:
    """One recipe of a run: features, network, loss, augmentation, and the seeds it is trained at."""

    name: str
    features: dict[str, Any]  # the whole features section (params.yaml's, overridden)
    model: str
    loss: dict[str, Any]  # {"name": ..., its keys, "label_smoothing": ...}
    augment: dict[str, Any]  # AugmentConfig's keys given (the others off)
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Recipe:
    path: Path
    folds: int
    seed: int
    choose_by: str
    train: dict[str, Any]  # the whole train section (params.yaml's, overridden)
    candidates: dict[str, Candidate]
    averages: tuple[tuple[str, ...], ...]
    repeats: int = 1  # the whole selection run this many times, with other fold and model seeds


def load_recipe(
    path: str | Path, params: dict[str, Any], models: Collection[str], augment_keys: Collection[str]
) -> Recipe:
    """Read and check a recipe against validated ``params`` (whose features and train sections it overrides), the
    network names ``models`` and the augmentation keys ``augment_keys``; raises :class:`RecipeError`."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        return _recipe(path, raw, params, models, augment_keys)
    except (_Bad, ParamsError) as exc:  # ParamsError: a value params.yaml also sets, by its rules
        raise RecipeError(f"{path}: {exc}") from None


def _recipe(
    path: Path, raw: Any, params: dict[str, Any], models: Collection[str], augment_keys: Collection[str]
) -> Recipe:
    raw = _mapping(raw, "the recipe", _TOP)
    folds, seed = raw.get("folds", 5), raw.get("seed", params["seed"])
    if not _is_int(folds) or folds < 2:
        raise _Bad("folds", f"got {folds!r}; expected an integer >= 2")
    if not _is_int(seed) or seed < 0:
        raise _Bad("seed", f"got {seed!r}; expected an integer >= 0")
    repeats = raw.get("repeats", 1)
    if not _is_int(repeats) or repeats < 1:
        raise _Bad("repeats", f"got {repeats!r}; expected an integer >= 1")
    choose_by = raw.get("choose_by", "f1_macro")
    if choose_by not in CHOOSE_BY:
        raise _Bad("choose_by", f"got {choose_by!r}; expected one of {', '.join(CHOOSE_BY)}")
    train = {**params["train"], **_mapping(raw.get("train", {}), "train", set(params["train"]))}
    check_section(train, "train", "train.")
    cands = _mapping(raw.get("candidates"), "candidates", None)
    if not cands:
        raise _Bad("candidates", "expected a mapping of one or more candidate names to their settings")
    candidates = {name: _candidate(name, spec, params, models, augment_keys) for name, spec in cands.items()}
    averages = tuple(_average(i, a, candidates) for i, a in enumerate(raw.get("averages") or []))
    return Recipe(path, folds, seed, choose_by, train, candidates, averages, repeats)


def _candidate(
    name: Any, spec: Any, params: dict[str, Any], models: Collection[str], augment_keys: Collection[str]
) -> Candidate:
    key = f"candidates.{name}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise _Bad(key, "a candidate's name is letters, digits, '_', '.' and '-'")
    spec = _mapping(spec, key, _CANDIDATE)
    features = {**params["features"], **_mapping(spec.get("features", {}), f"{key}.features", None)}
    check_features(features, f"{key}.features")
    model = spec.get("model")
    if model not in models:
        raise _Bad(f"{key}.model", f"got {model!r}; expected one of {', '.join(models)}")
    loss = _loss(spec.get("loss", {"name": "cross_entropy"}), f"{key}.loss")
    augment = _mapping(spec.get("augment", {}), f"{key}.augment", set(augment_keys))
    check_given(augment, "augment", f"{key}.augment.")  # params.yaml's rules: a bad value stops before training
    seeds = spec.get("seeds", [params["seed"]])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(_is_int(s) and s >= 0 for s in seeds)
        or len(set(seeds)) < len(seeds)
    ):
        raise _Bad(f"{key}.seeds", f"got {seeds!r}; expected a list of different integers >= 0")
    return Candidate(name, features, model, loss, augment, tuple(seeds))


def _loss(spec: Any, key: str) -> dict[str, Any]:
    if not isinstance(spec, dict) or spec.get("name") not in LOSSES:
        got = spec.get("name") if isinstance(spec, dict) else spec
        raise _Bad(f"{key}.name", f"got {got!r}; expected one of {', '.join(LOSSES)}")
    allowed = {"name", "label_smoothing", *LOSSES[spec["name"]]}
    _mapping(spec, key, allowed)
    for k, v in spec.items():
        if k != "name" and not LOSS_LIMITS[k].admits(v):  # the ranges params.yaml's loss sections keep
            raise ParamsError(refusal(f"{key}.{k}", v, LOSS_LIMITS[k].rule))
    return {"label_smoothing": 0.0, **spec}


def _average(i: int, names: Any, candidates: dict[str, Candidate]) -> tuple[str, ...]:
    key = f"averages[{i}]"
    if not isinstance(names, list) or len(names) < 2 or len(set(map(str, names))) < len(names):
        raise _Bad(key, f"got {names!r}; expected a list of two or more different candidate names")
    for n in names:
        if n not in candidates:
            raise _Bad(key, f"{n!r} is not a candidate (candidates: {', '.join(candidates)})")
    return tuple(names)


def _mapping(value: Any, key: str, allowed: set[str] | None) -> dict[str, Any]:
    """``value`` as a mapping whose keys are all in ``allowed`` (None: any)."""
    if not isinstance(value, dict):
        raise _Bad(key, f"got {value!r}; expected a mapping")
    for k in value:
        if allowed is not None and k not in allowed:
            raise _Bad(
                f"{key}.{k}" if key != "the recipe" else str(k), f"unknown key; allowed: {', '.join(sorted(allowed))}"
            )
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def augment_keys_of(config_class: type) -> list[str]:
    """The keys a recipe's ``augment`` may set: the fields of the augmentation settings."""
    return [f.name for f in dataclasses.fields(config_class)]
