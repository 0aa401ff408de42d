"""Classification metrics for long-tailed species sets, from scikit-learn wherever it has them.

Macro averages run over the species present in the evaluated set (``y_true``): a species with no test clip has no
recall to average. Predictions of other species still count, as errors of the true species.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

__all__ = ["HEADLINE", "classification_metrics", "per_class_table", "rare_species"]

# the scores every run is compared on (the top of metrics/<run>.json, the columns of the report)
HEADLINE = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "f1_rare", "f1_common", "top5_accuracy")


def rare_species(train_counts: Sequence[int], threshold: int) -> np.ndarray:
    """Indices of species with at most ``threshold`` training examples."""
    return np.flatnonzero(np.asarray(train_counts) <= threshold)


def classification_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    train_counts: Sequence[int],
    rare_threshold: int,
) -> dict[str, Any]:
    """Headline metrics of class probabilities ``proba`` ``(n, C)`` against integer labels ``y_true`` ``(n,)``.

    ``f1_rare`` / ``f1_common``: macro-F1 over the evaluated species with at most / more than ``rare_threshold``
    training examples (``None`` when a group has no evaluated species).
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba)
    n_classes = proba.shape[1]
    if len(train_counts) != n_classes:
        raise ValueError(f"train_counts has {len(train_counts)} entries for {n_classes} classes")
    y_pred = proba.argmax(axis=1)
    present = np.unique(y_true)
    rare = np.intersect1d(present, rare_species(train_counts, rare_threshold))
    common = np.setdiff1d(present, rare)

    def macro_f1(labels: np.ndarray) -> float | None:
        if labels.size == 0:
            return None
        return float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))

    return {
        "n_test": int(y_true.size),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "f1_macro": macro_f1(present),
        "f1_weighted": float(skm.f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)),
        "f1_rare": macro_f1(rare),
        "f1_common": macro_f1(common),
        "n_rare_species": int(rare.size),
        # mean test cross-entropy: moves with every probability, where argmax-based scores may not
        "log_loss": float(skm.log_loss(y_true, proba, labels=np.arange(n_classes))),
        # with five species or fewer every label is in the top five
        "top5_accuracy": float(skm.top_k_accuracy_score(y_true, proba, k=5, labels=np.arange(n_classes)))
        if n_classes > 5
        else 1.0,
    }


def per_class_table(
    y_true: np.ndarray, proba: np.ndarray, labels: Sequence[str], train_counts: Sequence[int]
) -> list[dict[str, Any]]:
    """One row per species: precision, recall, F1, test support and training count."""
    y_pred = np.asarray(proba).argmax(axis=1)
    idx = np.arange(len(labels))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    return [
        {
            "species": labels[i],
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
            "train_count": int(train_counts[i]),
        }
        for i in idx
    ]
