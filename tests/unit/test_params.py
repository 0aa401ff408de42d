"""Tests for speciesclf.params: a valid mapping passes; every kind of mistake stops with a line naming the key."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from speciesclf.features.config import FeatureConfig
from speciesclf.models.cnn import MODELS
from speciesclf.params import SCHEMA, ParamsError, load_params, phase3_features, validate

ROOT = Path(__file__).resolve().parents[2]


def valid_params() -> dict[str, Any]:
    """A complete, valid params mapping, built by hand (independent of the repository's params.yaml)."""
    return {
        "seed": 0,
        "data": {
            "source": "synthetic",
            "path": "src/speciesclf/data/synth.py",
            "csv": None,
            "on_error": "skip",
            "min_recordings": 3,
        },
        "synthetic": {
            "n_species": 8,
            "clip_seconds": 5.0,
            "sample_rate": 16000,
            "min_clips": 3,
            "imbalance": 10.0,
            "clips_per_recording": 2,
            "snr_db": [-3.0, 20.0],
            "distractor_prob": 0.5,
            "confusable_fraction": 0.3,
            "audio_format": "wav",
        },
        "features": {
            "front_end": "mfcc",
            "sample_rate": 16000,
            "clip_seconds": 5.0,
            "train_hop_seconds": 2.5,
            "n_mfcc": 20,
            "n_fft": 512,
            "hop_length": 160,
            "n_mels": 40,
            "f_min": 50.0,
            "f_max": None,
            "pcen_time_constant": 0.4,
            "time_expansion": 1.0,
        },
        "split": {"val": 0.15, "test": 0.15, "seed": 0},
        "loss": {"gamma": 2.0, "alpha": 0.25, "beta": 0.999, "label_smoothing": 0.0},
        "phase1": {"power": 1.0},
        "models": {
            "baseline": "AudioCNN",
            "phase1": "AudioCNN",
            "phase2a": "AudioCNN",
            "phase2b": "AudioCNNv2",
            "gamma_sweep": "AudioCNN",
            "phase3": "AudioCNN",
        },
        "train": {
            "epochs": 50,
            "batch_size": 32,
            "lr": 0.001,
            "weight_decay": 0.0001,
            "warmup_epochs": 5,
            "patience": 7,
            "device": "auto",
            "threads": 0,
            "processes": 1,
            "precision": "auto",
        },
        "gamma_sweep": {"gammas": [1.0, 2.0, 3.0]},
        "phase3": {
            "features": {"front_end": "logmel", "n_mels": 64},
            "loss": "logit_adjusted",
            "gamma": 2.0,
            "tau": 1.0,
            "power": 1.0,
            "label_smoothing": 0.0,
            "seeds": [0, 1, 2],
        },
        "augment": {
            "random_crop": True,
            "freq_mask": 8,
            "time_mask": 50,
            "masks": 2,
            "time_shift": 100,
            "mixup_alpha": 0.0,
            "mixup_prob": 1.0,
            "gain_db": 0.0,
            "background_prob": 0.0,
            "background_snr_db": [10.0, 30.0],
        },
        "ensemble": {"runs": ["phase2b", "phase3"]},
        "evaluate": {"rare_threshold": 5, "posthoc_tau": 0.0},
        "detect": {"threshold_rule": "precision", "beta": 1.0, "target_precision": 0.8, "shrinkage": 3.0},
        "soundscapes": {
            "recordings": 4,
            "seconds": 60.0,
            "bouts_per_minute": 2.0,
            "snr_db": [5.0, 10.0],
            "seed": 1,
            "hop_seconds": 1.0,
            "collar_seconds": 2.0,
        },
        "report": {
            "phase2a_min_accuracy": 0.40,
            "phase2a_min_f1_macro": 0.15,
            "phase2b_min_f1_macro": 0.20,
            "stretch_min_accuracy": 0.50,
            "stretch_min_f1_macro": 0.25,
            "min_f1_rare": 0.05,
            "stretch_min_f1_rare": 0.1,
            "max_gpu_memory_gb_audiocnn": 4.0,
            "max_gpu_memory_gb_audiocnnv2": 5.0,
        },
    }


def _with(dotted: str, value: Any) -> dict[str, Any]:
    params = valid_params()
    *parents, key = dotted.split(".")
    node = params
    for p in parents:
        node = node[p]
    node[key] = value
    return params


def _without(dotted: str) -> dict[str, Any]:
    params = valid_params()
    *parents, key = dotted.split(".")
    node = params
    for p in parents:
        node = node[p]
    del node[key]
    return params


def _error(params: Any) -> str:
    with pytest.raises(ParamsError) as exc:
        validate(params)
    message = str(exc.value)
    assert "\n" not in message  # one line for the user
    return message


def _keys(schema: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for k, v in schema.items():
        nested = isinstance(v, dict) and f"{prefix}{k}" != "phase3.features"  # a mapping value, not a section
        out |= _keys(v, f"{prefix}{k}.") if nested else {f"{prefix}{k}"}
    return out


def test_fixture_covers_schema() -> None:
    # if this fails the schema gained or lost a key: update valid_params() above
    assert _keys(valid_params()) == _keys(SCHEMA)


def test_valid_passes_unchanged() -> None:
    params = valid_params()
    before = copy.deepcopy(params)
    assert validate(params) is params
    assert params == before


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("data.source", "folder"),  # with a path, below
        ("loss.alpha", "balanced"),
        ("loss.alpha", None),
        ("loss.alpha", 1),
        ("loss.gamma", 0),
        ("features.f_max", 8000),
        ("features.f_max", 7999.5),
        ("features.front_end", "logmel"),
        ("features.front_end", "pcen"),
        ("phase3.features", {}),
        ("phase3.loss", "balanced_softmax"),
        ("phase3.seeds", [7]),
        ("augment.mixup_alpha", 0.4),
        ("train.device", "cpu"),
        ("train.lr", 1),  # an int where a number is expected
        ("gamma_sweep.gammas", [0, 0.5, 5]),
        ("models.baseline", "AudioCNNv2"),
        ("split.val", 0.49),
        ("data.on_error", "fail"),
        ("synthetic.audio_format", "flac"),
    ],
)
def test_other_valid_values(dotted: str, value: Any) -> None:
    params = _with(dotted, value)
    if dotted == "data.source":
        params["data"].update(path="/data/calls", csv="labels.csv")
    validate(params)


def test_unknown_nested_key() -> None:
    params = valid_params()
    params["loss"]["gama"] = 2.0
    message = _error(params)
    assert "loss.gama" in message
    assert "unknown key" in message
    for allowed in ("alpha", "beta", "gamma", "label_smoothing"):
        assert allowed in message


def test_unknown_top_level_key() -> None:
    params = valid_params()
    params["trian"] = {}
    message = _error(params)
    assert message.startswith("trian:")
    assert "top level" in message
    assert "train" in message


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("loss.gamma", -1),
        ("loss.gamma", 100.5),
        ("loss.gamma", math.nan),
        ("loss.alpha", 0),
        ("loss.alpha", "balancd"),
        ("loss.beta", 1.0),
        ("loss.label_smoothing", 1),
        ("train.epochs", 0),
        ("train.patience", 0),
        ("train.batch_size", -4),
        ("train.lr", 0),
        ("train.lr", math.inf),
        ("train.warmup_epochs", -1),
        ("train.device", "gpu"),
        ("train.threads", -1),
        ("train.processes", 0),
        ("train.processes", 1.5),
        ("seed", -1),
        ("seed", 2**32),
        ("data.source", "url"),
        ("data.on_error", "ignore"),
        ("data.min_recordings", 2),
        ("synthetic.n_species", 1),
        ("synthetic.snr_db", [20.0, -3.0]),
        ("synthetic.snr_db", [0.0]),
        ("synthetic.distractor_prob", 1.5),
        ("synthetic.audio_format", "mp3"),
        ("features.f_max", 0),
        ("features.clip_seconds", 0.0),
        ("features.train_hop_seconds", 0),
        ("features.front_end", "mel"),
        ("features.pcen_time_constant", 0),
        ("features.time_expansion", 0),
        ("features.time_expansion", 32),
        ("features.sample_rate", 16000.0),  # a float where an integer is required
        ("phase3.loss", "focall"),
        ("phase3.seeds", []),
        ("phase3.seeds", [1, 1]),
        ("phase3.seeds", [1.5]),
        ("augment.masks", 0),
        ("augment.random_crop", "yes"),
        ("augment.random_crop", 1),
        ("augment.mixup_prob", 1.5),
        ("augment.time_shift", -1),
        ("augment.gain_db", -3.0),
        ("augment.background_prob", -0.1),
        ("augment.background_snr_db", [30.0, 10.0]),
        ("augment.background_snr_db", [10.0]),
        ("split.val", 0),
        ("split.test", 1.0),
        ("evaluate.rare_threshold", 0),
        ("evaluate.posthoc_tau", -1.0),
        ("report.phase2a_min_accuracy", 1.2),
    ],
)
def test_out_of_range(dotted: str, value: Any) -> None:
    message = _error(_with(dotted, value))
    assert message.startswith(f"{dotted}: got {value!r}; allowed: ")


@pytest.mark.parametrize("runs", [[], ["phase4"], ["phase2b", "phase2b"], ["phase3/seed_0"], "phase2b", None])
def test_bad_ensemble_runs(runs: Any) -> None:
    message = _error(_with("ensemble.runs", runs))
    assert message.startswith(f"ensemble.runs: got {runs!r}; allowed: a list of distinct run groups from baseline, ")


def test_an_ensemble_needs_two_runs() -> None:
    params = _with("ensemble.runs", ["phase3"])
    params["phase3"]["seeds"] = [7]
    assert _error(params) == "ensemble.runs: ['phase3/seed_7'] is one run; an ensemble averages at least 2"
    params["phase3"]["seeds"] = [7, 8]  # every seed of phase 3: a seed ensemble
    validate(params)


@pytest.mark.parametrize("gammas", [[], [-1.0], [1.0, 100.5], [1.0, "2"], [True], 2.0, None])
def test_bad_gammas(gammas: Any) -> None:
    message = _error(_with("gamma_sweep.gammas", gammas))
    assert message.startswith("gamma_sweep.gammas:")
    assert "non-empty list" in message


@pytest.mark.parametrize("section", ["baseline", "phase1", "phase2a", "phase2b", "gamma_sweep"])
def test_unknown_model_is_rejected_by_the_training_stage(section: str, tmp_path: Path) -> None:
    """Model names are checked against the registry where models are built (params.py does not import torch)."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_with(f"models.{section}", "ResNet50")), encoding="utf-8")
    gamma = ["--gamma", "1.0"] if section == "gamma_sweep" else []
    cmd = [sys.executable, str(ROOT / "stages/train.py"), section, "feats", "model", "curves", *gamma]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr == f"params.yaml: models.{section}: got 'ResNet50'; allowed: one of {', '.join(MODELS)}\n"


def test_model_name_must_be_a_name() -> None:
    assert _error(_with("models.phase2b", " ")).startswith("models.phase2b: got ' '; allowed: a model name")


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("train.epochs", "ten"),
        ("train.epochs", 10.0),  # a float where an integer is required
        ("train.epochs", True),  # bool is an int subclass in Python, never a valid count
        ("train.lr", True),
        ("train.lr", "1e-3"),
        ("loss.alpha", False),
        ("loss.gamma", [2.0]),
        ("data.path", 5),
        ("models.gamma_sweep", None),
        ("train.epochs", None),
        ("phase1.power", "inverse"),
    ],
)
def test_wrong_type(dotted: str, value: Any) -> None:
    message = _error(_with(dotted, value))
    assert message.startswith(f"{dotted}: got {value!r}")


@pytest.mark.parametrize("dotted", ["train.patience", "loss.gamma", "seed", "report", "data.path", "phase1.power"])
def test_missing_key(dotted: str) -> None:
    assert _error(_without(dotted)) == f"{dotted}: missing"


def test_a_params_file_from_before_time_expansion_reads_as_no_expansion(tmp_path: Path) -> None:
    """An older experiment's params.yaml lacks the key; it reads as 1.0, which reproduces what that file gave."""
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    older = "".join(line for line in text.splitlines(keepends=True) if "time_expansion" not in line)
    assert older != text
    (tmp_path / "params.yaml").write_text(older, encoding="utf-8")
    params = load_params(tmp_path / "params.yaml")
    assert params["features"]["time_expansion"] == 1.0
    assert phase3_features(params)["time_expansion"] == 1.0


def test_a_params_file_from_before_detection_reads_the_sections_defaults(tmp_path: Path) -> None:
    """detect and soundscapes came later: a file without them (an older experiment's) gets every key's default,
    and a section given in part keeps what it gives."""
    params = valid_params()
    del params["detect"], params["soundscapes"]
    validate(params)
    assert params["detect"] == {"threshold_rule": "fbeta", "beta": 2.0, "target_precision": 0.9, "shrinkage": 2.0}
    assert params["soundscapes"]["recordings"] == 16 and params["soundscapes"]["snr_db"] == [0.0, 20.0]
    partial = valid_params()
    partial["detect"] = {"threshold_rule": "precision"}
    assert validate(partial)["detect"] == {
        "threshold_rule": "precision",
        "beta": 2.0,
        "target_precision": 0.9,
        "shrinkage": 2.0,
    }
    assert _error(_with("detect.threshold_rule", "recall")) == (
        "detect.threshold_rule: got 'recall'; allowed: one of fbeta, precision"
    )
    assert _error(_with("detect.shrinkage", True)).startswith("detect.shrinkage: got True")
    assert _error(_with("detect.beta", 0)).startswith("detect.beta: got 0")


def test_section_not_a_mapping() -> None:
    message = _error(_with("train", 5))
    assert message.startswith("train:")
    assert "mapping" in message
    assert "epochs" in message


def test_top_level_not_a_mapping() -> None:
    assert _error([1, 2]).startswith("params:")


@pytest.mark.parametrize(("val", "test"), [(0.5, 0.5), (0.6, 0.45), (0.9, 0.2)])
def test_split_fractions_must_leave_training(val: float, test: float) -> None:
    params = valid_params()
    params["split"].update(val=val, test=test)
    assert "split.val + split.test" in _error(params)


@pytest.mark.parametrize("path", [None, "", "  "])
def test_data_path_required(path: Any) -> None:
    params = valid_params()
    params["data"].update(source="folder", path=path)
    assert _error(params).startswith("data.path:")


def test_csv_source_needs_csv_name() -> None:
    params = valid_params()
    params["data"].update(source="csv", path="/data/calls", csv=None)
    message = _error(params)
    assert message.startswith("data.csv:")
    assert "csv" in message


def test_load_params_valid(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(valid_params()), encoding="utf-8")
    assert load_params(path) == valid_params()


def test_load_params_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: [1, 2\n  lr: 0.1\n", encoding="utf-8")
    with pytest.raises(ParamsError) as exc:
        load_params(path)
    assert str(path) in str(exc.value)
    assert "not valid YAML" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_load_params_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "params.yaml"
    with pytest.raises(ParamsError) as exc:
        load_params(path)
    assert str(exc.value) == f"{path}: not found"


def test_load_params_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ParamsError, match="missing"):
        load_params(path)


def test_load_params_typo_override(tmp_path: Path) -> None:
    params = valid_params()
    params["loss"]["gama"] = 3.0  # what `dvc exp run -S loss.gama=3` would write
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    with pytest.raises(ParamsError, match=r"loss\.gama"):
        load_params(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"train_hop_seconds": 6.0},
            "features.train_hop_seconds: got 6.0; must be <= features.clip_seconds (5): a larger hop skips audio",
        ),
        (
            {"hop_length": 1024},
            "features.hop_length: got 1024; must be <= features.n_fft (512): a larger hop skips samples",
        ),
        (
            {"f_max": 9000.0},
            "features.f_max: got 9000.0; must be <= 8000, the Nyquist frequency of features.sample_rate",
        ),
        ({"f_min": 500.0, "f_max": 400}, "features.f_min: got 500.0; must be below features.f_max (400)"),
        ({"f_min": 8000.0}, "features.f_min: got 8000.0; must be below the Nyquist frequency (8000)"),
        (
            {"clip_seconds": 0.1, "train_hop_seconds": 0.1, "n_fft": 4096},
            "features.n_fft: got 4096; must be under twice the clip's 1600 samples (features.clip_seconds x "
            "features.sample_rate): the clip is padded by n_fft/2 on each side",
        ),
        ({"front_end": "birdnet"}, "features.sample_rate: got 16000; the birdnet front end takes 48000"),
    ],
)
def test_a_rule_between_feature_keys_is_feature_configs(override: dict[str, Any], message: str) -> None:
    """params.py checks the rules between keys with FeatureConfig's function: the same rule, the same words."""
    params = valid_params()
    params["features"].update(override)
    assert _error(params) == message
    with pytest.raises(ValueError) as exc:
        FeatureConfig(**params["features"])
    assert str(exc.value) == message


def test_n_mfcc_above_n_mels_names_the_rule() -> None:
    params = _with("features.n_mfcc", 64)
    assert _error(params) == (
        "features.n_mfcc: got 64; must be <= features.n_mels (40): the MFCCs are a cosine transform of the mel bands"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"n_mels": 0}, "phase3.features.n_mels: got 0; allowed: an integer >= 1 and <= 512"),
        ({"n_mel": 64}, "phase3.features.n_mel: unknown key; allowed in phase3.features: clip_seconds, "),
        ({"n_mels": 16}, "phase3.features.n_mfcc: got 20; must be <= phase3.features.n_mels (16): "),
    ],
)
def test_a_bad_phase3_feature_override_names_its_key(override: dict[str, Any], message: str) -> None:
    params = _with("phase3.features", override)
    assert _error(params).startswith(message)


def _study(tmp_path: Path, text: str) -> Path:
    """A study folder two levels down whose params.yaml starts from a copy of the project's."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    study = tmp_path / "studies" / "mine"
    study.mkdir(parents=True)
    (study / "params.yaml").write_text(text, encoding="utf-8")
    return study / "params.yaml"


def test_a_study_reads_its_defaults_and_replaces_only_the_keys_it_sets(tmp_path: Path) -> None:
    path = _study(
        tmp_path,
        "defaults: [../../params.yaml]\ndata: {source: folder, path: recordings}\n"
        "features: {sample_rate: 44100}\nphase3: {features: {n_mels: 32}}\n",
    )
    params, base = load_params(path), load_params(tmp_path / "params.yaml")
    assert "defaults" not in params
    assert params["data"] == {**base["data"], "source": "folder", "path": "recordings"}
    assert params["features"] == {**base["features"], "sample_rate": 44100}
    assert params["phase3"]["features"] == {**base["phase3"]["features"], "n_mels": 32}  # merged all the way down
    assert {k: v for k, v in params.items() if k not in ("data", "features", "phase3")} == {
        k: v for k, v in base.items() if k not in ("data", "features", "phase3")
    }


def test_a_study_value_is_checked_like_any_other(tmp_path: Path) -> None:
    path = _study(tmp_path, "defaults: [../../params.yaml]\ntrain: {epochs: true}\n")
    with pytest.raises(ParamsError, match=r"^train\.epochs: got True"):
        load_params(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults: ../../params.yaml\n", "defaults: got '../../params.yaml'; expected a list"),
        ("defaults: [../params.yaml]\n", "params.yaml: not found"),
        ("defaults: [params.yaml]\n", "defaults: the file names itself"),
        ("- a list\n", "expected a mapping of params sections"),
    ],
)
def test_bad_defaults_are_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = _study(tmp_path, text)
    with pytest.raises(ParamsError) as exc:
        load_params(path)
    assert message in str(exc.value) and "params.yaml" in str(exc.value) and "\n" not in str(exc.value)
