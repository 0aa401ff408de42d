"""A recipe file read and checked key by key before any work: every bad key is one line naming the file and the
key (the select stage prints it as is; tests/integration/test_select.py runs that end to end)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from speciesclf.models.cnn import MODELS
from speciesclf.params import load_params
from speciesclf.selection.recipe import RecipeError, augment_keys_of, load_recipe
from speciesclf.training.augment import AugmentConfig

ROOT = Path(__file__).resolve().parents[3]
RECIPE = {
    "folds": 3,
    "candidates": {
        "mfcc": {"model": "AudioCNN"},
        "logmel": {
            "features": {"front_end": "logmel", "n_mels": 64},
            "model": "AudioCNNv3",
            "loss": {"name": "logit_adjusted", "tau": 0.5},
            "augment": {"freq_mask": 8},
            "seeds": [1, 2],
        },
    },
    "averages": [["mfcc", "logmel"]],
}


def _load(tmp_path: Path, recipe: object):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return load_recipe(path, load_params(ROOT / "params.yaml"), MODELS, augment_keys_of(AugmentConfig))


def test_a_recipe_overrides_the_params_it_names_and_keeps_the_rest(tmp_path: Path) -> None:
    params = load_params(ROOT / "params.yaml")
    recipe = _load(tmp_path, RECIPE)
    assert (recipe.folds, recipe.seed, recipe.choose_by, recipe.repeats) == (3, params["seed"], "f1_macro", 1)
    assert recipe.train == params["train"]
    mfcc, logmel = recipe.candidates["mfcc"], recipe.candidates["logmel"]
    assert mfcc.features == params["features"] and mfcc.loss == {"label_smoothing": 0.0, "name": "cross_entropy"}
    assert mfcc.seeds == (params["seed"],) and mfcc.augment == {}
    assert logmel.features == {**params["features"], "front_end": "logmel", "n_mels": 64}
    assert logmel.loss == {"name": "logit_adjusted", "tau": 0.5, "label_smoothing": 0.0}
    assert (logmel.model, logmel.augment, logmel.seeds) == ("AudioCNNv3", {"freq_mask": 8}, (1, 2))
    assert recipe.averages == (("mfcc", "logmel"),)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"candidats": {}}, "candidats: unknown key"),
        ({"folds": 1}, "folds: got 1; expected an integer >= 2"),
        ({"repeats": 0}, "repeats: got 0; expected an integer >= 1"),
        ({"choose_by": "auc"}, "choose_by: got 'auc'; expected one of f1_macro, accuracy"),
        ({"train": {"epochs": True}}, "train.epochs: got True"),
        ({"train": {"epoch": 3}}, "train.epoch: unknown key"),
        ({"candidates": {}}, "candidates: expected a mapping of one or more"),
        ({"candidates": {"a b": {"model": "AudioCNN"}}}, "candidates.a b: a candidate's name"),
        ({"candidates": {"x": {"model": "ResNet9000"}}}, "candidates.x.model: got 'ResNet9000'"),
        ({"candidates": {"x": {"model": "AudioCNN", "features": {"front_end": "wavelet"}}}}, "x.features.front_end"),
        ({"candidates": {"x": {"model": "AudioCNN", "features": {"n_fft": 8}}}}, "candidates.x.features.n_fft"),
        (
            {"candidates": {"x": {"model": "AudioCNN", "loss": {"name": "hinge"}}}},
            "candidates.x.loss.name: got 'hinge'",
        ),
        ({"candidates": {"x": {"model": "AudioCNN", "loss": {"name": "focal", "tau": 1}}}}, "x.loss.tau: unknown key"),
        ({"candidates": {"x": {"model": "AudioCNN", "loss": {"name": "focal", "gamma": -1}}}}, "x.loss.gamma: got -1"),
        ({"candidates": {"x": {"model": "AudioCNN", "augment": {"mask": 3}}}}, "candidates.x.augment.mask: unknown"),
        (
            {"candidates": {"x": {"model": "AudioCNN", "loss": {"name": "focal", "label_smoothing": 1.5}}}},
            "candidates.x.loss.label_smoothing: got 1.5; allowed: a number >= 0 and < 1",
        ),
        (
            {"candidates": {"x": {"model": "AudioCNN", "augment": {"freq_mask": -3}}}},
            "candidates.x.augment.freq_mask: got -3; allowed: an integer >= 0",
        ),
        (
            {"candidates": {"x": {"model": "AudioCNN", "augment": {"mixup_prob": 7}}}},
            "candidates.x.augment.mixup_prob: got 7; allowed: a number >= 0 and <= 1",
        ),
        ({"candidates": {"x": {"model": "AudioCNN", "augment": {"random_crop": 1}}}}, "random_crop: got 1; allowed"),
        ({"candidates": {"x": {"model": "AudioCNN", "seeds": [1, 1]}}}, "candidates.x.seeds: got [1, 1]"),
        ({"averages": [["mfcc", "nope"]]}, "averages[0]: 'nope' is not a candidate"),
        ({"averages": [["mfcc"]]}, "averages[0]: got ['mfcc']; expected a list of two or more"),
    ],
)
def test_a_bad_key_is_one_line_naming_the_file_and_the_key(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(RecipeError) as err:
        _load(tmp_path, {**RECIPE, **change})
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{tmp_path / 'recipe.yaml'}: ") and message in line, line


@pytest.mark.parametrize(("text", "message"), [(None, "recipe not found"), ("a: [1", "not valid YAML")])
def test_a_missing_or_broken_file_is_named(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "recipe.yaml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(RecipeError, match=f"^{path}: {message}"):
        load_recipe(path, load_params(ROOT / "params.yaml"), MODELS, augment_keys_of(AugmentConfig))


def test_every_recipe_the_project_ships_loads(tmp_path: Path) -> None:
    shipped = sorted(ROOT.glob("recipes/*.yaml")) + sorted(ROOT.glob("studies/*/recipe*.yaml"))
    assert len(shipped) >= 4
    for path in shipped:
        own = path.parent / "params.yaml"  # a study's, over the project's; a template has none
        params = load_params(own if own.is_file() else ROOT / "params.yaml")
        recipe = load_recipe(path, params, MODELS, augment_keys_of(AugmentConfig))
        assert recipe.candidates, path
