"""A run's loss: what each phase of the study trains with, from the params."""

from __future__ import annotations

from typing import Any

import pytest

from speciesclf.runs import loss_recipe

PARAMS: dict[str, Any] = {
    "loss": {"gamma": 2.0, "alpha": 0.25, "beta": 0.999, "label_smoothing": 0.0},
    "phase1": {"power": 0.5},
    "phase3": {"loss": "logit_adjusted", "gamma": 2.0, "tau": 1.5, "power": 1.0, "label_smoothing": 0.1},
}


def test_the_baseline_trains_with_plain_cross_entropy_and_phase1_with_class_weights() -> None:
    assert loss_recipe(PARAMS, "baseline") is None
    assert loss_recipe(PARAMS, "phase1") == {"name": "class_weighted", "power": 0.5, "label_smoothing": 0.0}


@pytest.mark.parametrize("phase", ["phase2a", "phase2b", "gamma_sweep"])
def test_phase2_and_the_sweep_train_with_the_loss_section_a_sweep_run_with_its_own_gamma(phase: str) -> None:
    assert loss_recipe(PARAMS, phase) == PARAMS["loss"]
    assert loss_recipe(PARAMS, phase) is not PARAMS["loss"]  # a copy: the caller may not change the params
    assert loss_recipe(PARAMS, "gamma_sweep", "0.5") == {**PARAMS["loss"], "gamma": 0.5}


def test_phase3_takes_the_keys_its_loss_reads_and_no_others() -> None:
    assert loss_recipe(PARAMS, "phase3") == {"name": "logit_adjusted", "tau": 1.5, "label_smoothing": 0.1}
    focal = {**PARAMS, "phase3": {**PARAMS["phase3"], "loss": "focal"}}
    assert loss_recipe(focal, "phase3") == {"name": "focal", "gamma": 2.0, "label_smoothing": 0.1}
