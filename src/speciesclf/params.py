"""Validate ``params.yaml`` before any work: unknown keys, wrong types and out-of-range values stop a stage with
one line naming the key and what is allowed (a typo passed with ``dvc exp run -S`` must not silently do nothing).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from speciesclf.choices import AUDIO_FORMATS, DEVICES, FRONT_ENDS, LOSS_LIMITS, LOSSES, PRECISIONS, THRESHOLD_RULES
from speciesclf.features.config import FEATURE_LIMITS, FeatureConfig, broken_feature_rule
from speciesclf.limits import Limit, one_of, refusal
from speciesclf.runs import GROUPS, runs_of
from speciesclf.training.config import TRAIN_LIMITS

__all__ = [
    "ParamsError",
    "check_features",
    "check_given",
    "check_section",
    "load_params",
    "phase3_features",
    "validate",
]


class ParamsError(ValueError):
    """A bad value in params.yaml; ``str()`` is the one line to show the user."""


_REQUIRED = object()


@dataclass(frozen=True)
class Rule:
    types: tuple[type, ...]
    check: Callable[[Any], bool] = lambda v: True
    allowed: str = ""
    optional: bool = False  # may be null
    # a key added after params files were in use: a file written before it (an older experiment's, a user's) reads
    # as this value, the one that reproduces what that file gave
    default: Any = _REQUIRED


def _limited(limit: Limit) -> Rule:
    """The rule of a key whose value is a number within ``limit``."""
    return Rule((int,) if limit.integer else (int, float), limit.admits, limit.rule, optional=limit.optional)


def _num(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> Rule:
    return _limited(Limit(lo, hi, lower_open=lo_open, upper_open=hi_open))


def _int(lo: int | None = None, hi: int | None = None) -> Rule:
    return _limited(Limit(lo, hi, integer=True))


def _choice(*options: str) -> Rule:
    return Rule((str,), lambda v: v in options, one_of(options))


def _gammas(v: list[Any]) -> bool:
    return len(v) > 0 and all(LOSS_LIMITS["gamma"].admits(g) for g in v)


def _groups(v: list[Any]) -> bool:
    return len(v) > 0 and all(isinstance(g, str) and g in GROUPS for g in v) and len(set(v)) == len(v)


def _seeds(v: list[Any]) -> bool:
    ints = [s for s in v if isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32]
    return len(v) > 0 and len(ints) == len(v) and len(set(v)) == len(v)


# a model's name is checked against the registry by the stage that builds it (speciesclf.models.cnn), so that
# validating params needs no torch and no stage depends on the models' code through this module
_MODEL = Rule((str,), lambda v: bool(v.strip()), "a model name (see speciesclf.models.cnn.MODELS)")
_BOOL = Rule((bool,), allowed="true or false")


def _features_rules() -> dict[str, Rule]:
    """The ``features`` section: FeatureConfig's keys, each with its limit (the rules between keys: validate)."""
    rules = {"front_end": _choice(*FRONT_ENDS), **{key: _limited(limit) for key, limit in FEATURE_LIMITS.items()}}
    # added after params files were in use: an older file reads as FeatureConfig's default, which it gave
    rules["time_expansion"] = replace(rules["time_expansion"], default=FeatureConfig.time_expansion)
    return rules


_TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "patience")  # TrainConfig's in params

SCHEMA: dict[str, Any] = {
    "seed": _int(0, 2**32 - 1),
    "data": {
        "source": _choice("synthetic", "folder", "csv"),
        "path": Rule(
            (str,), lambda v: bool(v.strip()), "a path: the generator module (synthetic) or the collection's folder"
        ),
        "csv": Rule((str,), lambda v: bool(v.strip()), "a CSV file name inside data.path, or null", optional=True),
        "on_error": _choice("skip", "fail"),
        "min_recordings": _int(3),
    },
    "synthetic": {
        "n_species": _int(2, 10000),
        "clip_seconds": _num(0.1, 60),
        "sample_rate": _int(16000, 384000),
        "min_clips": _int(3),
        "imbalance": _num(1),
        "clips_per_recording": _int(1),
        "snr_db": Rule(
            (list,),
            lambda v: len(v) == 2 and all(isinstance(x, int | float) for x in v) and v[0] <= v[1],
            "a list [low, high] of dB values with low <= high",
        ),
        "distractor_prob": _num(0, 1),
        "confusable_fraction": _num(0, 1),
        "audio_format": _choice(*AUDIO_FORMATS),
    },
    "features": _features_rules(),
    "split": {
        "val": _num(0, 1, lo_open=True, hi_open=True),
        "test": _num(0, 1, lo_open=True, hi_open=True),
        "seed": _int(0, 2**32 - 1),
    },
    "loss": {
        "gamma": _limited(LOSS_LIMITS["gamma"]),
        "alpha": Rule(
            (int, float, str),
            lambda v: v == "balanced" if isinstance(v, str) else 0 < v <= 100,
            "a number > 0, 'balanced', or null",
            optional=True,
        ),
        "beta": _limited(LOSS_LIMITS["beta"]),
        "label_smoothing": _limited(LOSS_LIMITS["label_smoothing"]),
    },
    "models": {
        "baseline": _MODEL,
        "phase1": _MODEL,
        "phase2a": _MODEL,
        "phase2b": _MODEL,
        "gamma_sweep": _MODEL,
        "phase3": _MODEL,
    },
    "train": {
        **{key: _limited(TRAIN_LIMITS[key]) for key in _TRAIN_KEYS},
        "device": _choice(*DEVICES),
        "precision": _choice(*PRECISIONS),
        "threads": _int(0, 1024),
        "processes": _int(1, 1024),
    },
    "phase1": {"power": _limited(LOSS_LIMITS["power"])},
    "gamma_sweep": {"gammas": Rule((list,), _gammas, f"a non-empty list, each {LOSS_LIMITS['gamma'].rule}")},
    "phase3": {
        "features": Rule((dict,), allowed="a mapping of `features` keys to the values phase 3 uses instead"),
        "loss": _choice(*LOSSES),
        **{key: _limited(LOSS_LIMITS[key]) for key in ("gamma", "tau", "power", "label_smoothing")},
        "seeds": Rule((list,), _seeds, "a non-empty list of distinct integers from 0 to 2**32 - 1"),
    },
    "augment": {
        "random_crop": Rule((bool,), allowed="true or false"),
        "freq_mask": _int(0, 512),
        "time_mask": _int(0, 100000),
        "masks": _int(1, 16),
        "time_shift": _int(0, 100000),
        "mixup_alpha": _num(0, 100),
        "mixup_prob": _num(0, 1),
        "gain_db": _num(0, 60),
        "background_prob": _num(0, 1),
        "background_snr_db": Rule(
            (list,),
            lambda v: len(v) == 2 and all(isinstance(x, int | float) for x in v) and -60 <= v[0] <= v[1] <= 100,
            "a list [low, high] of dB values with -60 <= low <= high <= 100",
        ),
    },
    "ensemble": {"runs": Rule((list,), _groups, f"a list of distinct run groups from {', '.join(GROUPS)}")},
    "evaluate": {"rare_threshold": _int(1), "posthoc_tau": _num(0, 10)},
    "detect": {  # per-species detection thresholds, fitted by the stage that writes a model (speciesclf.thresholds)
        "threshold_rule": replace(_choice(*THRESHOLD_RULES), default="fbeta"),
        "beta": replace(_num(0, 100, lo_open=True), default=2.0),
        "target_precision": replace(_num(0, 1, lo_open=True), default=0.9),
        "shrinkage": replace(_num(0, 100000), default=2.0),
    },
    "soundscapes": {  # synthetic field recordings with known calls: detection measured (stages/detection.py)
        "recordings": replace(_int(2, 1000), default=16),
        "seconds": replace(_num(10, 86400), default=180.0),
        "bouts_per_minute": replace(_num(0.1, 60), default=6.0),
        "snr_db": replace(
            Rule(
                (list,),
                lambda v: len(v) == 2 and all(isinstance(x, int | float) for x in v) and v[0] <= v[1],
                "a list [low, high] of dB values with low <= high",
            ),
            default=[0.0, 20.0],
        ),
        "seed": replace(_int(0, 2**32 - 1), default=7),
        "hop_seconds": replace(_num(0, 60, lo_open=True), default=2.5),
        "collar_seconds": replace(_num(0, 60, lo_open=True), default=5.0),
    },
    "report": {
        "phase2a_min_accuracy": _num(0, 1),
        "phase2a_min_f1_macro": _num(0, 1),
        "phase2b_min_f1_macro": _num(0, 1),
        "stretch_min_accuracy": _num(0, 1),
        "stretch_min_f1_macro": _num(0, 1),
        "min_f1_rare": _num(0, 1),
        "stretch_min_f1_rare": _num(0, 1),
        "max_gpu_memory_gb_audiocnn": _num(0, 1024, lo_open=True),
        "max_gpu_memory_gb_audiocnnv2": _num(0, 1024, lo_open=True),
    },
}


def _has_default(rule: Any) -> bool:
    return not isinstance(rule, dict) and rule.default is not _REQUIRED


def _walk(params: dict[str, Any], schema: dict[str, Any], prefix: str) -> None:
    if not isinstance(params, dict):
        raise ParamsError(f"{prefix.rstrip('.') or 'params'}: expected a mapping of {sorted(schema)}")
    for key in params:
        if key not in schema:
            where = prefix.rstrip(".") or "top level"
            raise ParamsError(f"{prefix}{key}: unknown key; allowed in {where}: {', '.join(sorted(schema))}")
    for key, rule in schema.items():
        name = f"{prefix}{key}"
        if key not in params and getattr(rule, "default", _REQUIRED) is not _REQUIRED:
            params[key] = copy.deepcopy(rule.default)
        if key not in params and isinstance(rule, dict) and all(_has_default(r) for r in rule.values()):
            params[key] = {}  # a section added since the file was written: every key takes its default
        if key not in params:
            raise ParamsError(f"{name}: missing")
        value = params[key]
        if isinstance(rule, dict):
            _walk(value, rule, f"{name}.")
            continue
        if value is None and rule.optional:
            continue
        bad_type = (isinstance(value, bool) and bool not in rule.types) or not isinstance(value, rule.types)
        if bad_type or not rule.check(value):
            raise ParamsError(refusal(name, value, rule.allowed))


def validate(params: dict[str, Any]) -> dict[str, Any]:
    """Check every key of a params mapping against :data:`SCHEMA`; returns it, with any key added since it was
    written filled in with its default."""
    _walk(params, SCHEMA, "")
    if params["split"]["val"] + params["split"]["test"] >= 1:
        raise ParamsError("split.val + split.test: must leave a training share (sum < 1)")
    _check_features(params["features"], "features")
    phase3 = phase3_features(params)
    _walk(phase3, SCHEMA["features"], "phase3.features.")  # also refuses a key `features` does not have
    _check_features(phase3, "phase3.features")
    members = [run for group in params["ensemble"]["runs"] for run in runs_of(group, params)]
    if len(members) < 2:
        raise ParamsError(f"ensemble.runs: {members} is one run; an ensemble averages at least 2")
    if params["data"]["source"] == "csv" and not params["data"]["csv"]:
        raise ParamsError("data.csv: required when data.source is 'csv' (the CSV's name inside data.path)")
    return params


def check_section(values: dict[str, Any], section: str, prefix: str) -> None:
    """Check one section's values (``section`` of :data:`SCHEMA`) given elsewhere, e.g. in a recipe; messages name
    the keys with ``prefix``."""
    _walk(values, SCHEMA[section], prefix)


def check_given(values: dict[str, Any], section: str, prefix: str) -> None:
    """Check the keys given of one section, each by its rule, where the others keep their defaults (a recipe's
    ``augment``); messages name the keys with ``prefix``."""
    rules = SCHEMA[section]
    for key in values:
        if key not in rules:
            raise ParamsError(f"{prefix}{key}: unknown key; allowed: {', '.join(sorted(rules))}")
    _walk(values, {key: rules[key] for key in values}, prefix)


def check_features(feats: dict[str, Any], where: str) -> None:
    """Check a whole features section given elsewhere (a recipe's candidate): each key, and the rules between them."""
    _walk(feats, SCHEMA["features"], f"{where}.")
    _check_features(feats, where)


def phase3_features(params: dict[str, Any]) -> dict[str, Any]:
    """Phase 3's feature settings: ``features`` with the keys of ``phase3.features`` replaced."""
    return {**params["features"], **params["phase3"]["features"]}


def _check_features(feats: dict[str, Any], section: str) -> None:
    """The rules between ``features`` keys, FeatureConfig's (``section`` names where the values came from)."""
    broken = broken_feature_rule(feats, section)
    if broken is not None:
        raise ParamsError(broken)


def load_params(path: str | os.PathLike[str] = "params.yaml") -> dict[str, Any]:
    """Read and validate params.yaml; raises :class:`ParamsError` with a one-line message.

    A file may start from others: ``defaults: [../../params.yaml]`` (paths relative to the file, as Hydra's
    defaults list) reads those first, in order, and this file's values replace theirs key by key, mappings merged
    all the way down. A study folder thus holds only what its collection changes (``studies/*/params.yaml``).
    """
    return validate(_layered(Path(path), ()))


def _layered(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """``path``'s values over those of the files its ``defaults`` names."""
    if path.resolve() in seen:
        raise ParamsError(f"{path}: defaults: the file names itself through {' -> '.join(map(str, seen))}")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    params = params if params is not None else {}
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of params sections")
    bases = params.pop("defaults", [])
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ParamsError(f"{path}: defaults: got {bases!r}; expected a list of params files (paths relative to it)")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = _merge(merged, _layered(path.parent / base, (*seen, path.resolve())))
    return _merge(merged, params)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out
