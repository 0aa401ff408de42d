"""Per-species score thresholds: fitted on held-out windows, shipped in the model card, applied by ``predict``.

A window is a detection of species *s* when its score (the model's probability of *s*) is at or above *s*'s
threshold. The thresholds are fitted one species against the rest on windows the model did not learn from (the
validation split for a training stage, the out-of-fold windows of cross-validation for ``select``), every window
labelled with its recording's species:

- ``rule: fbeta``: the threshold that maximises the species' F-beta, (1 + β²) P R / (β² P + R) (ties: the lowest
  threshold, the most recall). β > 1 weighs recall above precision: held-out windows are clips that each hold a
  call, so a threshold best on them sits too high for field audio, where a window holds part of a call, or a faint
  one (docs/detection.md has the measurement behind the default β = 2);
- ``rule: precision``: the lowest threshold whose precision reaches ``target_precision``.

The threshold is placed halfway between the score that reaches the optimum and the next lower score seen, so that
it does not sit on one held-out window's score. Most species have a few held-out windows, so each species' own
threshold is shrunk towards the same rule fitted on every species' windows pooled: with *n* windows of its own,
t = (n t_own + m t_pooled) / (n + m), m = ``shrinkage`` (the pooled threshold counts as m windows). A species
with no window, or (``precision``) none reaching the target, takes the pooled threshold.

The block this module writes under ``thresholds`` in ``model.json``::

    {"rule": "fbeta", "beta": 2.0, "target_precision": 0.9, "shrinkage": 2.0, "fitted_on": "validation windows",
     "windows": 412, "fallback": 0.16, "species": {"sp01_pulse": {"threshold": 0.21, "own": 0.31, "fitted": true,
     "positives": 3}, ...}}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speciesclf.choices import THRESHOLD_RULES
from speciesclf.limits import one_of

__all__ = ["ThresholdsError", "fit_thresholds", "read_thresholds", "rule_of", "threshold_array"]


class ThresholdsError(ValueError):
    """A thresholds file or block that cannot be used; ``str()`` is the one line to show."""


def rule_of(detect: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords of :func:`fit_thresholds` from the params section ``detect``."""
    keys = {"threshold_rule": "rule", "beta": "beta", "target_precision": "target_precision", "shrinkage": "shrinkage"}
    return {arg: detect[key] for key, arg in keys.items()}


def _fit_one(positive: np.ndarray, scores: np.ndarray, rule: str, beta: float, target_precision: float) -> float | None:
    """One threshold for ``scores`` against the boolean ``positive``; None where the rule reaches nothing."""
    if not positive.any():
        return None
    # imported here, not at the top: predict reads thresholds but never fits them, and scikit-learn's import
    # (with SciPy) is about 110 MB of its peak memory
    from sklearn.metrics import precision_recall_curve

    precision, recall, cuts = precision_recall_curve(positive, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    if rule == "fbeta":
        b2 = beta * beta
        both = b2 * precision + recall
        f = np.where(both > 0, (1 + b2) * precision * recall / np.maximum(both, 1e-12), 0.0)
        best = int(np.argmax(f))  # cuts rise: the first maximum is the lowest threshold
    else:
        reach = np.flatnonzero(precision >= target_precision)
        if reach.size == 0:
            return None
        best = int(reach[0])
    lower = scores[scores < cuts[best]]
    return float((cuts[best] + lower.max()) / 2) if lower.size else float(cuts[best])


def fit_thresholds(
    proba: np.ndarray,
    y: np.ndarray,
    species: Sequence[str],
    rule: str = "fbeta",
    beta: float = 2.0,
    target_precision: float = 0.9,
    shrinkage: float = 2.0,
    fitted_on: str = "validation windows",
) -> dict[str, Any]:
    """The thresholds block for a model: ``proba`` ``(windows, species)`` held-out window scores, ``y`` ``(windows,)``
    each window's species index."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"rule: got {rule!r}; expected {one_of(THRESHOLD_RULES)}")
    proba, y = np.asarray(proba, dtype=np.float64), np.asarray(y)
    onehot = y[:, None] == np.arange(len(species))[None, :]
    fallback = _fit_one(onehot.ravel(), proba.ravel(), rule, beta, target_precision)
    fallback = 0.5 if fallback is None else fallback  # nothing reaches the rule even pooled: the usual cut
    per_species = {}
    for i, name in enumerate(species):
        n = int(onehot[:, i].sum())
        own = _fit_one(onehot[:, i], proba[:, i], rule, beta, target_precision)
        threshold = fallback if own is None else (n * own + shrinkage * fallback) / (n + shrinkage)
        per_species[name] = {"threshold": threshold, "own": own, "fitted": own is not None, "positives": n}
    return {
        "rule": rule,
        "beta": beta,
        "target_precision": target_precision,
        "shrinkage": shrinkage,
        "fitted_on": fitted_on,
        "windows": len(y),
        "fallback": fallback,
        "species": per_species,
    }


def threshold_array(block: Mapping[str, Any], species: Sequence[str], default: float, where: str) -> np.ndarray:
    """The thresholds of ``species`` in model order from a block (a card's, or a file's); a species the block does
    not name takes ``default``. A name the model lacks, or a value that is not a score, is a one-line error naming
    ``where``."""
    entries = block.get("species", block) if isinstance(block, Mapping) else None
    if not isinstance(entries, Mapping):
        raise ThresholdsError(f"{where}: expected a mapping of species to thresholds")
    index = {name: i for i, name in enumerate(species)}
    out = np.full(len(species), float(default))
    for name, entry in entries.items():
        value = entry.get("threshold") if isinstance(entry, Mapping) else entry
        if name not in index:
            raise ThresholdsError(f"{where}: {name!r} is not one of the model's species")
        if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value <= 1) or math.isnan(value):
            raise ThresholdsError(f"{where}: {name}: got {value!r}; expected a score from 0 to 1")
        out[index[name]] = float(value)
    return out


def read_thresholds(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """A thresholds file: JSON, either ``{"species": {name: {"threshold": x}}}`` (a card's block, as written) or a
    plain ``{name: x}``."""
    try:
        block = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ThresholdsError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ThresholdsError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(block, dict):
        raise ThresholdsError(f"{path}: expected a mapping of species to thresholds")
    return block
