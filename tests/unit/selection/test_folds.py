"""Cross-validation folds over recordings: each species in every fold, as evenly as it can be, the same for a seed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from speciesclf.selection.folds import recording_folds

SPECIES = ["a"] * 7 + ["b"] * 3 + ["c"] * 12


def test_each_fold_holds_out_every_species_about_evenly() -> None:
    folds = recording_folds(SPECIES, 3, seed=0)
    assert folds.shape == (len(SPECIES),) and set(folds.tolist()) == {0, 1, 2}
    for s in set(SPECIES):
        per_fold = Counter(f for f, sp in zip(folds.tolist(), SPECIES, strict=True) if sp == s)
        assert set(per_fold) == {0, 1, 2} and max(per_fold.values()) - min(per_fold.values()) <= 1, (s, per_fold)


def test_the_seed_decides_the_folds() -> None:
    np.testing.assert_array_equal(recording_folds(SPECIES, 3, seed=5), recording_folds(SPECIES, 3, seed=5))
    assert any((recording_folds(SPECIES, 3, seed=s) != recording_folds(SPECIES, 3, seed=5)).any() for s in range(5))


def test_more_folds_than_the_rarest_species_has_recordings_names_it() -> None:
    with pytest.raises(ValueError, match=r"^got 4; species 'b' has 3 .* at most 3 folds$"):
        recording_folds(SPECIES, 4, seed=0)
