"""Per-species thresholds: the rules on scores whose best threshold is known, the shrinkage, and the files."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from speciesclf.thresholds import ThresholdsError, fit_thresholds, read_thresholds, rule_of, threshold_array

SPECIES = ["owl", "wren", "rail"]


def _windows() -> tuple[np.ndarray, np.ndarray]:
    """owl: its 6 windows score 0.6-0.9, the others' owl scores 0.1-0.5 but one wren window at 0.7 (so F1 is best
    at 0.6 and precision 1 needs 0.75); wren and rail score their own windows 0.4 and others' 0.2; rail has 2."""
    y = np.array([0] * 6 + [1] * 6 + [2] * 2)
    proba = np.full((len(y), 3), 0.2)
    proba[:6, 0] = [0.6, 0.65, 0.75, 0.8, 0.85, 0.9]
    proba[6:, 0] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.1, 0.1]
    proba[6:12, 1] = 0.4
    proba[12:, 2] = 0.4
    return proba, y


def test_f1_puts_the_threshold_between_the_best_cut_and_the_next_score_below() -> None:
    block = fit_thresholds(*_windows(), SPECIES, rule="fbeta", beta=1.0, shrinkage=0.0)
    owl = block["species"]["owl"]
    # at >= 0.6: 6 owl + 1 wren window, F1 12/13, the best; the next score below is 0.5
    assert owl == {"threshold": pytest.approx(0.55), "own": pytest.approx(0.55), "fitted": True, "positives": 6}
    assert block["species"]["wren"]["fitted"] and 0.2 < block["species"]["wren"]["threshold"] <= 0.4


def test_a_larger_beta_buys_recall_with_a_lower_threshold() -> None:
    """A seventh owl window scoring 0.15, below four of the other species' owl scores. At >= 0.6: 6 of 7 found,
    1 false (F1 0.857, F3 0.857); at >= 0.15: 7 of 7, 5 false (F1 0.737, F3 0.933). F1 keeps 0.55, F3 goes down
    to take it: halfway between 0.15 and the next score below, 0.1."""
    proba, y = _windows()
    proba, y = np.vstack([proba, [0.15, 0.2, 0.2]]), np.append(y, 0)
    f1 = fit_thresholds(proba, y, SPECIES, rule="fbeta", beta=1.0, shrinkage=0.0)["species"]["owl"]["threshold"]
    f3 = fit_thresholds(proba, y, SPECIES, rule="fbeta", beta=3.0, shrinkage=0.0)["species"]["owl"]["threshold"]
    assert f1 == pytest.approx(0.55) and f3 == pytest.approx((0.15 + 0.1) / 2)


def test_precision_rule_takes_the_lowest_threshold_reaching_the_target() -> None:
    block = fit_thresholds(*_windows(), SPECIES, rule="precision", target_precision=1.0, shrinkage=0.0)
    assert block["species"]["owl"]["threshold"] == pytest.approx((0.75 + 0.7) / 2)  # above the wren window at 0.7


def test_each_species_is_shrunk_to_the_pooled_threshold_by_its_window_count() -> None:
    proba, y = _windows()
    own = fit_thresholds(proba, y, SPECIES, shrinkage=0.0)
    shrunk = fit_thresholds(proba, y, SPECIES, shrinkage=3.0)
    pooled = shrunk["fallback"]
    assert pooled == own["fallback"]  # the pooled fit does not depend on the shrinkage
    for name, n in (("owl", 6), ("wren", 6), ("rail", 2)):
        mine = own["species"][name]["threshold"]
        assert shrunk["species"][name] == {
            "threshold": pytest.approx((n * mine + 3.0 * pooled) / (n + 3.0)),
            "own": pytest.approx(mine),
            "fitted": True,
            "positives": n,
        }
    # the rarer species moves further towards the pool
    moved = {s: abs(shrunk["species"][s]["threshold"] - own["species"][s]["threshold"]) for s in ("wren", "rail")}
    assert abs(own["species"]["rail"]["threshold"] - pooled) > 0 and moved["rail"] / abs(
        own["species"]["rail"]["threshold"] - pooled
    ) > moved["wren"] / abs(own["species"]["wren"]["threshold"] - pooled)
    assert shrunk["windows"] == len(y) and shrunk["fitted_on"] == "validation windows"


def test_a_species_without_windows_takes_the_pooled_threshold() -> None:
    proba, y = _windows()
    keep = y != 2  # no rail window at all
    block = fit_thresholds(proba[keep], y[keep], SPECIES)
    assert block["species"]["rail"] == {"threshold": block["fallback"], "own": None, "fitted": False, "positives": 0}


def test_unreachable_precision_falls_back_and_the_block_is_json() -> None:
    proba, y = _windows()
    proba[:, 1] = 0.3  # wren's own windows score like everyone's: no threshold reaches precision 0.9
    block = fit_thresholds(proba, y, SPECIES, rule="precision", target_precision=0.9)
    assert block["species"]["wren"]["fitted"] is False
    assert block["species"]["wren"]["threshold"] == block["fallback"]
    assert json.loads(json.dumps(block)) == block


def test_params_section_gives_the_keywords() -> None:
    detect = {"threshold_rule": "precision", "beta": 1.5, "target_precision": 0.8, "shrinkage": 3.0}
    assert rule_of(detect) == {"rule": "precision", "beta": 1.5, "target_precision": 0.8, "shrinkage": 3.0}
    assert set(rule_of(detect)) <= set(inspect.signature(fit_thresholds).parameters)


def test_threshold_array_in_model_order_with_a_default_for_the_rest() -> None:
    block = {"species": {"rail": {"threshold": 0.3}, "owl": {"threshold": 0.7}}}
    assert threshold_array(block, SPECIES, 0.5, "card").tolist() == [0.7, 0.5, 0.3]
    assert threshold_array({"wren": 0.25}, SPECIES, 0.5, "f.json").tolist() == [0.5, 0.25, 0.5]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"nightingale": 0.4}, "f.json: 'nightingale' is not one of the model's species"),
        ({"owl": 1.5}, "f.json: owl: got 1.5; expected a score from 0 to 1"),
        ({"owl": True}, "f.json: owl: got True; expected a score from 0 to 1"),
        ({"owl": "high"}, "f.json: owl: got 'high'; expected a score from 0 to 1"),
        ({"species": [0.4]}, "f.json: expected a mapping of species to thresholds"),
    ],
)
def test_a_bad_block_is_one_line_naming_where(block: dict, message: str) -> None:
    with pytest.raises(ThresholdsError) as err:
        threshold_array(block, SPECIES, 0.5, "f.json")
    assert str(err.value) == message


def test_read_thresholds_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text('{"owl": 0.4}', encoding="utf-8")
    assert read_thresholds(tmp_path / "t.json") == {"owl": 0.4}
    (tmp_path / "bad.json").write_text("{owl", encoding="utf-8")
    for name, why in (("bad.json", "not valid JSON"), ("gone.json", "cannot be read")):
        with pytest.raises(ThresholdsError, match=f"^{tmp_path / name}: {why}"):
            read_thresholds(tmp_path / name)
    (tmp_path / "list.json").write_text("[1]", encoding="utf-8")
    with pytest.raises(ThresholdsError, match="expected a mapping"):
        read_thresholds(tmp_path / "list.json")
