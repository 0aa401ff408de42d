"""Tests for speciesclf.metrics against values worked out by hand and against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from speciesclf.evaluation.metrics import classification_metrics, per_class_table, rare_species

# sklearn's balanced accuracy warns when a prediction names a species absent from y_true, as here on purpose
pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true:UserWarning")

# Six species; species 5 has no test clip. Rare (<= 3 training examples): 0, 2 (boundary), 4.
TRAIN_COUNTS = [2, 10, 3, 20, 1, 50]
RARE_THRESHOLD = 3
LABELS = ["ant", "bee", "cat", "dog", "eel", "fox"]
Y_TRUE = np.array([0, 0, 1, 1, 1, 2, 3, 3, 4, 4])
Y_PRED = np.array([0, 1, 1, 1, 5, 2, 3, 0, 3, 4])
# the one species left out of each row's top five; rows 1 and 7 leave out their true species
LOWEST = np.array([5, 0, 5, 5, 0, 5, 5, 3, 5, 5])


def _proba() -> np.ndarray:
    proba = np.zeros((len(Y_TRUE), 6))
    for i, (pred, low) in enumerate(zip(Y_PRED, LOWEST, strict=True)):
        rest = [c for c in range(6) if c not in (pred, low)]
        proba[i, rest] = [0.14, 0.13, 0.12, 0.11]
        proba[i, pred], proba[i, low] = 0.45, 0.05
    return proba


def test_example_is_consistent() -> None:
    proba = _proba()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(proba.argmax(axis=1), Y_PRED)


def test_hand_computed_values() -> None:
    m = classification_metrics(Y_TRUE, _proba(), TRAIN_COUNTS, RARE_THRESHOLD)
    # per present species: (TP, FP, FN) -> F1
    # 0: (1, 1, 1) -> 1/2 ; 1: (2, 1, 1) -> 2/3 ; 2: (1, 0, 0) -> 1 ; 3: (1, 1, 1) -> 1/2 ; 4: (1, 0, 1) -> 2/3
    f1 = {0: 1 / 2, 1: 2 / 3, 2: 1.0, 3: 1 / 2, 4: 2 / 3}
    recall = {0: 1 / 2, 1: 2 / 3, 2: 1.0, 3: 1 / 2, 4: 1 / 2}
    support = {0: 2, 1: 3, 2: 1, 3: 2, 4: 2}
    assert m["n_test"] == 10
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["f1_macro"] == pytest.approx(sum(f1.values()) / 5) == pytest.approx(2 / 3)
    assert m["f1_rare"] == pytest.approx((f1[0] + f1[2] + f1[4]) / 3) == pytest.approx(13 / 18)
    assert m["f1_common"] == pytest.approx((f1[1] + f1[3]) / 2) == pytest.approx(7 / 12)
    assert m["n_rare_species"] == 3
    assert m["balanced_accuracy"] == pytest.approx(sum(recall.values()) / 5)
    assert m["f1_weighted"] == pytest.approx(sum(f1[c] * support[c] for c in f1) / 10)
    assert m["top5_accuracy"] == pytest.approx(8 / 10)


def test_matches_sklearn() -> None:
    proba = _proba()
    m = classification_metrics(Y_TRUE, proba, TRAIN_COUNTS, RARE_THRESHOLD)
    present = np.unique(Y_TRUE)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(Y_TRUE, Y_PRED))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(Y_TRUE, Y_PRED, labels=present, average="macro"))
    assert m["f1_rare"] == pytest.approx(skm.f1_score(Y_TRUE, Y_PRED, labels=[0, 2, 4], average="macro"))
    assert m["f1_common"] == pytest.approx(skm.f1_score(Y_TRUE, Y_PRED, labels=[1, 3], average="macro"))
    assert m["top5_accuracy"] == pytest.approx(skm.top_k_accuracy_score(Y_TRUE, proba, k=5, labels=np.arange(6)))


def test_json_friendly_types() -> None:
    m = classification_metrics(Y_TRUE, _proba(), TRAIN_COUNTS, RARE_THRESHOLD)
    for key, value in m.items():
        assert type(value) in (int, float), key


def test_no_rare_species_gives_none() -> None:
    m = classification_metrics(Y_TRUE, _proba(), TRAIN_COUNTS, rare_threshold=0)
    assert m["f1_rare"] is None
    assert m["n_rare_species"] == 0
    assert m["f1_common"] == pytest.approx(m["f1_macro"])


def test_all_rare_gives_no_common() -> None:
    m = classification_metrics(Y_TRUE, _proba(), TRAIN_COUNTS, rare_threshold=1000)
    assert m["f1_common"] is None
    assert m["f1_rare"] == pytest.approx(m["f1_macro"])
    assert m["n_rare_species"] == 5  # species 5 is rare in training but not evaluated


def test_top5_trivial_with_few_classes() -> None:
    y = np.array([0, 1, 2, 1])
    proba = np.eye(3)[[1, 1, 0, 2]]
    m = classification_metrics(y, proba, [5, 5, 5], rare_threshold=1)
    assert m["top5_accuracy"] == 1.0
    assert m["accuracy"] == pytest.approx(1 / 4)


def test_perfect_predictions() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, size=50)
    proba = np.eye(8)[y] * 0.9 + 0.1 / 8
    m = classification_metrics(y, proba, [10] * 8, rare_threshold=5)
    assert m["accuracy"] == m["f1_macro"] == m["balanced_accuracy"] == m["top5_accuracy"] == 1.0


def test_train_counts_length_mismatch() -> None:
    with pytest.raises(ValueError, match="5 entries for 6 classes"):
        classification_metrics(Y_TRUE, _proba(), TRAIN_COUNTS[:5], RARE_THRESHOLD)


def test_rare_species() -> None:
    np.testing.assert_array_equal(rare_species(TRAIN_COUNTS, 3), [0, 2, 4])
    assert rare_species(TRAIN_COUNTS, 0).size == 0


def test_per_class_table() -> None:
    rows = per_class_table(Y_TRUE, _proba(), LABELS, TRAIN_COUNTS)
    assert [r["species"] for r in rows] == LABELS
    assert [r["support"] for r in rows] == [2, 3, 1, 2, 2, 0]
    assert [r["train_count"] for r in rows] == TRAIN_COUNTS
    by = {r["species"]: r for r in rows}
    assert by["ant"]["precision"] == pytest.approx(1 / 2)
    assert by["bee"]["recall"] == pytest.approx(2 / 3)
    assert by["eel"]["precision"] == pytest.approx(1.0)
    assert by["eel"]["recall"] == pytest.approx(1 / 2)
    assert by["eel"]["f1"] == pytest.approx(2 / 3)
    # predicted once, never present: precision 0 without a division warning
    assert by["fox"] == {
        "species": "fox",
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
        "train_count": 50,
    }
    p, r, f, s = skm.precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=np.arange(6), zero_division=0)
    for key, expected in (("precision", p), ("recall", r), ("f1", f), ("support", s)):
        np.testing.assert_allclose([row[key] for row in rows], expected)
