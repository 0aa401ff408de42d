"""Whether a run collapsed, by a stated rule, with the numbers behind the verdict (the study's "training stability").

The study's Phase 1 (class-weighted cross-entropy) "collapsed": 6-26 % accuracy, its predictions piled onto a
few species. A run is judged **collapsed** when any of three signs shows:

- ``diverged``: its training loss turned non-finite (training stopped there and kept its best epoch so far; the
  card's ``diverged`` says where), or a loss in its history is not finite;
- ``fell_back``: its last epoch's validation macro-F1 is below ``FELL_BACK`` (half) of its best, so it learned
  and then lost most of it (early stopping keeps the best weights, but such a run is not stable);
- ``concentrated``: one species receives more than ``CONCENTRATED`` (half) of the test windows' predictions, and
  at least twice its share of the test windows (a species that truly holds half the test set may be predicted
  that often).

An ensemble has no training history: only ``concentrated`` applies to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["CONCENTRATED", "FELL_BACK", "stability"]

FELL_BACK = 0.5  # last validation macro-F1 below this share of the best
CONCENTRATED = 0.5  # one species' share of the predictions above this (and twice its true share)


def stability(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    history: Sequence[dict[str, Any]] | None,
    diverged: str | None = None,
) -> dict[str, Any]:
    """The verdict and its numbers: test labels and predictions ``(windows,)``; ``history`` one mapping per epoch
    with ``train_loss``, ``val_loss`` and ``val_f1_macro`` (a model card's), or None for an ensemble; ``diverged``
    where training's loss turned non-finite (a card's ``diverged``), if it did."""
    predicted = np.bincount(y_pred)
    top = int(predicted.argmax())
    top_share = float(predicted[top] / len(y_pred))
    true_share = float(np.mean(y_true == top))
    numbers: dict[str, Any] = {
        "top_species_share": top_share,  # share of the test predictions that go to the most predicted species
        "top_species_true_share": true_share,  # that species' share of the test windows
        "species_predicted": int(np.count_nonzero(predicted)),
        "species_in_test": len(np.unique(y_true)),
    }
    signs = []
    if diverged is not None:
        numbers["diverged_at"] = diverged
    if diverged is not None or not all(math.isfinite(h[k]) for h in history or () for k in ("train_loss", "val_loss")):
        signs.append("diverged")
    if top_share > CONCENTRATED and top_share >= 2 * true_share:
        signs.append("concentrated")
    if history:
        f1 = [h["val_f1_macro"] for h in history]
        numbers |= {"best_val_f1_macro": max(f1), "last_val_f1_macro": f1[-1]}
        if f1[-1] < FELL_BACK * max(f1):
            signs.append("fell_back")
    return {"collapsed": bool(signs), "signs": sorted(signs), **numbers}
