"""Per-species score thresholds: fitted on held-out windows, shipped in the model card, applied by ``predict``.

A window is a detection of species *s* when its score (the model's probability of *s*) is at or above *s*'s
threshold. The thresholds are fitted one species against the rest on windows the model did not learn from (the
validation split for a training stage, the out-of-fold windows of cross-validation for ``select``), every window
labelled with its recording's species:

- ``rule: f1``: the threshold that maximises the species' F1 (ties: the lowest threshold, the most recall);
- ``rule: precision``: the lowest threshold whose precision reaches ``target_precision``.

The threshold is placed halfway between the score that reaches the optimum and the next lower score seen, so that
it does not sit on one held-out window's score. A species with fewer than ``min_positives`` held-out windows, or
(``precision``) none reaching the target, takes the fallback: the same rule fitted on every species' windows pooled
(one threshold for all species). The card records which species were fitted and on how many windows.

The block this module writes under ``thresholds`` in ``model.json``::

    {"rule": "f1", "target_precision": 0.9, "min_positives": 5, "fitted_on": "validation windows",
     "fallback": 0.41, "species": {"sp01_pulse": {"threshold": 0.37, "fitted": true, "positives": 12}, ...}}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RULES", "ThresholdsError", "fit_thresholds", "read_thresholds", "rule_of", "threshold_array"]

RULES = ("f1", "precision")


class ThresholdsError(ValueError):
    """A thresholds file or block that cannot be used; ``str()`` is the one line to show."""


def rule_of(detect: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords of :func:`fit_thresholds` from the params section ``detect``."""
    keys = {"threshold_rule": "rule", "target_precision": "target_precision", "min_positives": "min_positives"}
    return {arg: detect[key] for key, arg in keys.items()}


def _fit_one(positive: np.ndarray, scores: np.ndarray, rule: str, target_precision: float) -> float | None:
    """One threshold for ``scores`` against the boolean ``positive``; None where the rule reaches nothing."""
    if not positive.any():
        return None
    # imported here, not at the top: predict reads thresholds but never fits them, and scikit-learn's import
    # (with SciPy) is about 110 MB of its peak memory
    from sklearn.metrics import precision_recall_curve

    precision, recall, cuts = precision_recall_curve(positive, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    if rule == "f1":
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
        best = int(np.argmax(f1))  # cuts rise: the first maximum is the lowest threshold
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
    rule: str = "f1",
    target_precision: float = 0.9,
    min_positives: int = 5,
    fitted_on: str = "validation windows",
) -> dict[str, Any]:
    """The thresholds block for a model: ``proba`` ``(windows, species)`` held-out window scores, ``y`` ``(windows,)``
    each window's species index."""
    if rule not in RULES:
        raise ValueError(f"rule: got {rule!r}; expected one of {', '.join(RULES)}")
    proba, y = np.asarray(proba, dtype=np.float64), np.asarray(y)
    onehot = y[:, None] == np.arange(len(species))[None, :]
    fallback = _fit_one(onehot.ravel(), proba.ravel(), rule, target_precision)
    fallback = 0.5 if fallback is None else fallback  # nothing reaches the rule even pooled: the usual cut
    per_species = {}
    for i, name in enumerate(species):
        positives = int(onehot[:, i].sum())
        t = _fit_one(onehot[:, i], proba[:, i], rule, target_precision) if positives >= min_positives else None
        per_species[name] = {"threshold": fallback if t is None else t, "fitted": t is not None, "positives": positives}
    return {
        "rule": rule,
        "target_precision": target_precision,
        "min_positives": min_positives,
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
