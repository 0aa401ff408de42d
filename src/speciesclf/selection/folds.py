"""Cross-validation folds over recordings: grouped by recording (no recording lends windows to two folds),
stratified by species (each species in every fold), seeded."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold

__all__ = ["recording_folds"]


def recording_folds(species: Sequence[str], k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of each recording, given each recording's species.

    Every species needs at least ``k`` recordings, so that each fold holds it out once; otherwise a
    ``ValueError`` names the species and its count (the caller puts the recipe's key in front).
    """
    counts = Counter(species)
    rarest = min(counts, key=lambda s: (counts[s], s))
    if counts[rarest] < k:
        raise ValueError(
            f"got {k}; species {rarest!r} has {counts[rarest]} train + validation recording(s), and each of the "
            f"{k} folds must hold one out: at most {counts[rarest]} folds"
        )
    labels = np.asarray(species)
    folds = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        folds[held_out] = fold
    return folds
