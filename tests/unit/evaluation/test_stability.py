"""The collapse rule (speciesclf.evaluation.stability) on predictions and histories built to show each sign."""

from __future__ import annotations

import math

import numpy as np

from speciesclf.evaluation.stability import stability

Y = np.repeat(np.arange(4), 25)  # 100 test windows, 4 species a quarter each


def _epochs(f1s: list[float], loss: float = 1.0) -> list[dict]:
    return [{"train_loss": loss, "val_loss": loss, "val_f1_macro": f} for f in f1s]


def test_a_run_that_learned_and_kept_it_is_stable_with_its_numbers() -> None:
    pred = Y.copy()
    pred[:10] = 1
    verdict = stability(Y, pred, _epochs([0.2, 0.5, 0.45]))
    assert verdict == {
        "collapsed": False,
        "signs": [],
        "top_species_share": 0.35,
        "top_species_true_share": 0.25,
        "species_predicted": 4,
        "species_in_test": 4,
        "best_val_f1_macro": 0.5,
        "last_val_f1_macro": 0.45,
    }


def test_predictions_piled_on_one_species_are_a_collapse_unless_it_holds_that_share() -> None:
    pred = Y.copy()
    pred[:35] = 2  # 60 % of the predictions on species 2, which holds 25 %
    verdict = stability(Y, pred, _epochs([0.3]))
    assert verdict["collapsed"] and verdict["signs"] == ["concentrated"] and verdict["top_species_share"] == 0.6
    common = np.r_[np.zeros(70, int), np.ones(30, int)]  # species 0 truly holds 70 %: predicting it 70 % is fine
    assert not stability(common, common, None)["collapsed"]


def test_a_run_that_fell_back_or_diverged_collapsed() -> None:
    assert stability(Y, Y, _epochs([0.1, 0.6, 0.29]))["signs"] == ["fell_back"]  # under half its best
    assert stability(Y, Y, _epochs([0.1, 0.6, 0.31]))["signs"] == []
    assert stability(Y, Y, _epochs([0.3, 0.3], loss=math.nan))["signs"] == ["diverged"]
    assert "best_val_f1_macro" not in stability(Y, Y, None)  # an ensemble: no history to judge


def test_a_run_whose_training_diverged_collapsed_and_says_where() -> None:
    where = "non-finite training loss (nan) at epoch 3, batch 7"
    verdict = stability(Y, Y, _epochs([0.3, 0.4]), diverged=where)  # its kept epochs look fine: it still collapsed
    assert verdict["collapsed"] and verdict["signs"] == ["diverged"] and verdict["diverged_at"] == where
    assert stability(Y, Y, [], diverged=where)["signs"] == ["diverged"]  # diverged before an epoch finished
