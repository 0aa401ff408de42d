"""Tests for speciesclf.limits, and that params.py and the settings classes refuse every value in the same words:
each limit of FEATURE_LIMITS and TRAIN_LIMITS is crossed once through a whole params file (the repository's
params.yaml) and once through FeatureConfig or TrainConfig; each of LOSS_LIMITS once through every params section
that sets the key and once through a recipe's candidate."""

from __future__ import annotations

import copy
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from speciesclf.choices import LOSS_LIMITS, LOSSES
from speciesclf.features.config import FEATURE_LIMITS, FeatureConfig
from speciesclf.limits import Limit, one_of, refusal
from speciesclf.models.cnn import MODELS
from speciesclf.params import SCHEMA, ParamsError, load_params, validate
from speciesclf.selection.recipe import RecipeError, load_recipe
from speciesclf.training.config import TRAIN_LIMITS, TrainConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    return load_params(ROOT / "params.yaml")


def _outside(limit: Limit) -> list[Any]:
    """A value just below the lower bound, one just above the upper, and for an integer limit a float between."""
    values: list[Any] = []
    if limit.lower is not None:
        values.append(limit.lower if limit.lower_open else limit.lower - 1)
    if limit.upper is not None:
        values.append(limit.upper if limit.upper_open else limit.upper + 1)
    if limit.integer:
        values.append((limit.lower or 0) + 0.5)
    return values


def _cases(limits: dict[str, Limit]) -> list[tuple[str, Any]]:
    return [(key, value) for key, limit in limits.items() for value in _outside(limit)]


def _refused_by_params(params: dict[str, Any], section: str, key: str, value: Any) -> str:
    changed = copy.deepcopy(params)
    changed[section][key] = value
    with pytest.raises(ParamsError) as exc:
        validate(changed)
    return str(exc.value)


_TRAIN_IN_PARAMS = {k: TRAIN_LIMITS[k] for k in TRAIN_LIMITS if k in SCHEMA["train"]}
_BOTH = [("features", FEATURE_LIMITS, FeatureConfig), ("train", _TRAIN_IN_PARAMS, TrainConfig)]


@pytest.mark.parametrize(("section", "key", "value"), [(s, k, v) for s, limits, _ in _BOTH for k, v in _cases(limits)])
def test_params_and_the_settings_refuse_a_value_in_the_same_words(
    params: dict[str, Any], section: str, key: str, value: Any
) -> None:
    limits, config = next((limits, config) for s, limits, config in _BOTH if s == section)
    expected = refusal(f"{section}.{key}", value, limits[key].rule)
    assert _refused_by_params(params, section, key, value) == expected
    base = params["features"] if section == "features" else {}  # FeatureConfig's rules between keys need the rest
    with pytest.raises(ValueError) as exc:
        config(**{**base, key: value})
    assert str(exc.value) == expected


_LOSS_SECTIONS = [(s, k) for s in ("loss", "phase1", "phase3") for k in SCHEMA[s] if k in LOSS_LIMITS]


@pytest.mark.parametrize(
    ("section", "key", "value"), [(s, k, v) for s, k in _LOSS_SECTIONS for v in _outside(LOSS_LIMITS[k])]
)
def test_params_and_a_recipe_refuse_a_loss_value_in_the_same_words(
    params: dict[str, Any], tmp_path: Path, section: str, key: str, value: Any
) -> None:
    assert _refused_by_params(params, section, key, value) == refusal(f"{section}.{key}", value, LOSS_LIMITS[key].rule)
    name = next((n for n, keys in LOSSES.items() if key in keys), "focal")  # label_smoothing: any loss reads it
    if key not in ("label_smoothing", *LOSSES[name]):
        return  # beta: a key of the study's `loss` section only, which no recipe loss reads
    recipe = tmp_path / "recipe.yaml"
    loss = {"name": name, key: value}
    recipe.write_text(yaml.safe_dump({"folds": 2, "candidates": {"x": {"model": "AudioCNN", "loss": loss}}}))
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe, params, MODELS, ())
    assert str(exc.value) == f"{recipe}: " + refusal(f"candidates.x.loss.{key}", value, LOSS_LIMITS[key].rule)


def test_every_loss_key_params_sets_has_its_limit() -> None:
    for section, key in _LOSS_SECTIONS:
        assert SCHEMA[section][key].allowed == LOSS_LIMITS[key].rule, (section, key)
    assert {k for keys in LOSSES.values() for k in keys} | {"label_smoothing"} <= set(LOSS_LIMITS)
    gammas = copy.deepcopy(load_params(ROOT / "params.yaml"))
    gammas["gamma_sweep"]["gammas"] = [1.0, LOSS_LIMITS["gamma"].upper + 1]
    with pytest.raises(ParamsError, match=LOSS_LIMITS["gamma"].rule):
        validate(gammas)


@pytest.mark.parametrize(("key", "value"), _cases({k: v for k, v in TRAIN_LIMITS.items() if k not in SCHEMA["train"]}))
def test_train_config_refuses_a_key_params_does_not_have(key: str, value: Any) -> None:
    with pytest.raises(ValueError) as exc:
        TrainConfig(**{key: value})
    assert str(exc.value) == refusal(f"train.{key}", value, TRAIN_LIMITS[key].rule)


@pytest.mark.parametrize(("key", "options"), [("device", "cpu, cuda"), ("precision", "fp32, bf16")])
def test_params_and_train_config_name_the_same_choices(params: dict[str, Any], key: str, options: str) -> None:
    message = _refused_by_params(params, "train", key, "tpu")
    with pytest.raises(ValueError) as exc:
        TrainConfig(**{key: "tpu"})
    assert str(exc.value) == message and options in message


def test_the_features_schema_is_feature_config_with_its_limits() -> None:
    assert list(SCHEMA["features"]) == [f.name for f in fields(FeatureConfig)]
    for key, limit in FEATURE_LIMITS.items():
        assert SCHEMA["features"][key].allowed == limit.rule
        assert SCHEMA["features"][key].optional == limit.optional
    assert SCHEMA["features"]["time_expansion"].default == FeatureConfig().time_expansion
    assert {k for k in SCHEMA["train"] if k in TRAIN_LIMITS} == set(_TRAIN_IN_PARAMS)
    assert set(_TRAIN_IN_PARAMS) <= {f.name for f in fields(TrainConfig)}


@pytest.mark.parametrize(
    ("limit", "rule"),
    [
        (Limit(1, 128, integer=True), "an integer >= 1 and <= 128"),
        (Limit(0, 10, lower_open=True), "a number > 0 and <= 10"),
        (Limit(0, 1, upper_open=True), "a number >= 0 and < 1"),
        (Limit(0.1, 16), "a number >= 0.1 and <= 16"),
        (Limit(0), "a number >= 0"),
        (Limit(0, lower_open=True, optional=True), "a number > 0 or null"),
        (Limit(integer=True), "an integer"),
    ],
)
def test_a_limit_states_its_rule(limit: Limit, rule: str) -> None:
    assert limit.rule == rule


@pytest.mark.parametrize(
    ("limit", "admitted", "refused"),
    [
        (Limit(1, 128, integer=True), [1, 64, 128], [0, 129, 2.0, True, None, "3"]),
        (Limit(0, 10, lower_open=True), [1e-9, 3, 10.0], [0, 0.0, 10.5, math.nan, math.inf, False]),
        (Limit(0, 1, upper_open=True), [0, 0.999], [1, 1.0, -0.1]),
        (Limit(0, lower_open=True, optional=True), [None, 1e6], [0, -1.0]),
    ],
)
def test_a_limit_admits_numbers_within_it(limit: Limit, admitted: list[Any], refused: list[Any]) -> None:
    assert [limit.admits(v) for v in admitted] == [True] * len(admitted)
    assert [limit.admits(v) for v in refused] == [False] * len(refused)


def test_words_of_a_choice_and_a_refusal() -> None:
    assert one_of(("a", "b")) == "one of a, b"
    assert refusal("train.lr", 0, "a number > 0") == "train.lr: got 0; allowed: a number > 0"
