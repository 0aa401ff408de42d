"""Scoring runs and ensembles: tiny models trained here on real audio files, two front ends, real feature stores."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from speciesclf.data.prepare import prepare
from speciesclf.evaluation.evaluate import (
    EnsembleError,
    Member,
    evaluate_ensemble,
    evaluate_model,
    feature_store_of,
)
from speciesclf.evaluation.metrics import classification_metrics
from speciesclf.features.config import FeatureConfig
from speciesclf.features.store import FeatureStore, featurize
from speciesclf.models.saved import load_model, save_model
from speciesclf.params import validate
from speciesclf.training.config import TrainConfig
from speciesclf.training.run import train_model

ROOT = Path(__file__).resolve().parents[3]
SR = 16000
FREQS = {"cricket": 500.0, "katydid": 1500.0, "cicada": 3000.0}
RECORDINGS = {"cricket": 8, "katydid": 5, "cicada": 3}  # a long tail, so the training prior is not uniform


class Runs(NamedTuple):
    base: Path
    mfcc: Member
    logmel: Member
    short: Member  # 0.5 s windows: other test windows than the two above


def _record(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for label, freq in FREQS.items():
        (folder / label).mkdir(parents=True)
        for r in range(RECORDINGS[label]):
            t = np.arange(SR) / SR
            wave = 0.4 * np.sin(2 * np.pi * freq * (1 + 0.03 * r) * t) + 0.05 * rng.standard_normal(t.size)
            sf.write(folder / label / f"r{r}.wav", wave.astype(np.float32), SR)


def _train(base: Path, name: str, **features: object) -> Member:
    feats = FeatureConfig(
        **{"sample_rate": SR, "clip_seconds": 1.0, "train_hop_seconds": 0.5, "n_mels": 32, **features}
    )
    featurize(base / "prepared" / "manifest.csv", base / f"features_{name}", feats, workers=1)
    config = TrainConfig(epochs=2, warmup_epochs=0, device="cpu", precision="fp32")
    trained = train_model(base / f"features_{name}", "AudioCNN", None, config, log=None)
    save_model(base / "models" / name, trained.network, trained.card)
    return Member(name, base / "models" / name, base / f"features_{name}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    base = tmp_path_factory.mktemp("evaluate")
    _record(base / "recordings")
    params = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")))
    params["data"].update({"source": "folder", "path": str(base / "recordings")})
    params["features"].update(sample_rate=SR, clip_seconds=1.0, train_hop_seconds=0.5)
    prepare(validate(params), base / "prepared")
    short = _train(base, "short", front_end="mfcc", clip_seconds=0.5, train_hop_seconds=0.5)
    return Runs(base, _train(base, "mfcc", front_end="mfcc"), _train(base, "logmel", front_end="logmel"), short)


def _proba(member: Member) -> tuple[np.ndarray, np.ndarray]:
    """The member's test probabilities computed here, independently of the evaluation code."""
    model = load_model(member.model_dir)
    x, y, _ = FeatureStore(member.features_dir).load_split("test")
    with torch.no_grad():
        return torch.softmax(model.network(torch.as_tensor(np.asarray(x))).double(), dim=1).numpy(), y


def test_an_ensemble_scores_the_mean_of_its_members_probabilities(runs: Runs) -> None:
    (p1, y), (p2, y2) = _proba(runs.mfcc), _proba(runs.logmel)
    assert np.array_equal(y, y2)
    result = evaluate_ensemble([runs.mfcc, runs.logmel], rare_threshold=5)
    counts = load_model(runs.mfcc.model_dir).card["train_counts"]
    expected = classification_metrics(y, (p1 + p2) / 2, counts, 5)
    for key, value in expected.items():
        assert result["window"][key] == pytest.approx(value, abs=1e-9), key
    species = load_model(runs.mfcc.model_dir).species
    assert [c["predicted"] for c in result["confusion"]] == [species[i] for i in ((p1 + p2) / 2).argmax(1)]
    assert result["recording"]["n_recordings"] == 3  # one test recording per species
    # the same member twice is that member: averaging does not change a single run's scores
    alone = evaluate_model(runs.mfcc.model_dir, runs.mfcc.features_dir, 5)
    assert evaluate_ensemble([runs.mfcc, runs.mfcc], 5)["window"] == pytest.approx(alone["window"])


def test_posthoc_logit_adjustment_divides_the_probabilities_by_the_prior_to_the_tau(runs: Runs) -> None:
    """softmax(z - τ log π) ∝ p(y|x) / π(y)^τ: checked on the probabilities, not on the logits the code adjusts."""
    p, y = _proba(runs.mfcc)
    counts = np.asarray(load_model(runs.mfcc.model_dir).card["train_counts"], dtype=np.float64)
    by_hand = p / (counts / counts.sum()) ** 0.7
    by_hand /= by_hand.sum(axis=1, keepdims=True)
    result = evaluate_model(runs.mfcc.model_dir, runs.mfcc.features_dir, 5, tau=0.7)
    expected = classification_metrics(y, by_hand, counts.astype(int).tolist(), 5)
    assert result["window"]["log_loss"] == pytest.approx(expected["log_loss"], rel=1e-9)
    assert result["window"] == pytest.approx(expected)
    plain = evaluate_model(runs.mfcc.model_dir, runs.mfcc.features_dir, 5)
    assert plain["window"]["log_loss"] != pytest.approx(expected["log_loss"])


def test_each_member_finds_the_store_of_its_front_end(runs: Runs) -> None:
    stores = [runs.mfcc.features_dir, runs.logmel.features_dir]
    assert feature_store_of(runs.logmel.model_dir, stores) == runs.logmel.features_dir
    assert feature_store_of(runs.mfcc.model_dir, stores) == runs.mfcc.features_dir
    with pytest.raises(EnsembleError, match=rf"^{runs.short.model_dir}: none of the feature stores .* has its"):
        feature_store_of(runs.short.model_dir, stores)


def test_members_cutting_other_windows_are_averaged_per_recording(runs: Runs) -> None:
    """0.5 s and 1 s windows: each member's recording probability (mean of its windows), then their mean."""
    assert evaluate_ensemble([runs.mfcc, runs.logmel], 5)["averaged"] == "window"
    result = evaluate_ensemble([runs.mfcc, runs.short], 5)
    assert result["averaged"] == "recording"
    by_recording = []
    for member in (runs.mfcc, runs.short):
        p, y = _proba(member)
        _, _, recordings = FeatureStore(member.features_dir).load_split("test")
        ids = sorted(set(recordings))
        by_recording.append(np.stack([p[[r == i for r in recordings]].mean(axis=0) for i in ids]))
        labels = [int(y[recordings.index(i)]) for i in ids]
    counts = load_model(runs.mfcc.model_dir).card["train_counts"]
    expected = classification_metrics(np.asarray(labels), sum(by_recording) / 2, counts, 5)
    assert result["window"] == pytest.approx(expected) and result["recording"]["n_recordings"] == len(labels)
    assert result["recording"]["accuracy"] == pytest.approx(expected["accuracy"])


def test_members_scoring_other_recordings_are_refused_by_name(runs: Runs, tmp_path: Path) -> None:
    fewer = tmp_path / "fewer"
    shutil.copytree(runs.short.features_dir, fewer)
    keep = np.load(fewer / "test_y.npy") != 0  # drop the test recording of one species
    for name in ("test_x.npy", "test_y.npy"):
        np.save(fewer / name, np.load(fewer / name)[keep])
    rows = (fewer / "test_windows.csv").read_text().splitlines()
    kept = [r for r, k in zip(rows[1:], keep, strict=True) if k]
    (fewer / "test_windows.csv").write_text("\n".join([rows[0], *kept]) + "\n")
    member = Member("fewer", runs.short.model_dir, fewer)
    with pytest.raises(EnsembleError, match=r"^ensemble: run fewer scores other test recordings than run mfcc$"):
        evaluate_ensemble([runs.mfcc, member], 5)


def test_members_with_other_species_are_refused_by_name(runs: Runs, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(runs.logmel.model_dir, other)
    card = json.loads((other / "model.json").read_text())
    card["species"] = card["species"][::-1]  # same species, other output order: averaging would mix them up
    (other / "model.json").write_text(json.dumps(card))
    member = Member("reordered", other, runs.logmel.features_dir)
    with pytest.raises(EnsembleError, match=r"^ensemble: run reordered was trained on other species than run mfcc$"):
        evaluate_ensemble([runs.mfcc, member], 5)


def test_an_ensemble_of_one_is_refused(runs: Runs) -> None:
    with pytest.raises(EnsembleError, match="at least 2 runs, got 1"):
        evaluate_ensemble([runs.mfcc], 5)


def test_a_run_records_what_it_took(runs: Runs) -> None:
    config = TrainConfig(epochs=2, warmup_epochs=0, patience=5, device="cpu", precision="fp32", batch_size=8)
    trained = train_model(runs.mfcc.features_dir, "AudioCNN", None, config, log=None)
    r = trained.resources
    counted = sum(
        t.numel() for t in load_model(runs.mfcc.model_dir).network.state_dict().values() if t.is_floating_point()
    )
    bn_stats = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in trained.network.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    )
    assert r["parameters"] == counted - bn_stats  # weights, not batch norm's running statistics
    assert (r["model"], r["device"], r["precision"], r["batch_size"], r["processes"]) == (
        "AudioCNN",
        "cpu",
        "fp32",
        8,
        1,
    )
    peak_now = int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) / 1024
    assert 0 < r["peak_memory_mb"] <= peak_now + 1 and r["memory"] == "process peak RSS"
    assert 0 < r["seconds_per_epoch"] <= trained.train_seconds
    assert "resources" not in trained.card and "peak_memory_mb" not in json.dumps(trained.card)


@pytest.mark.parametrize(
    ("other", "kept"), [({}, True), ({"model": "EmbeddingMLP"}, False), ({"best_epoch": 7}, False)]
)
def test_the_stage_keeps_wall_clock_facts_only_from_the_models_own_training(
    runs: Runs, tmp_path: Path, other: dict, kept: bool
) -> None:
    """A run DVC restores from its run cache does not rewrite its git-tracked curves; what is there may be another
    run's (a BirdNET head's experiment finds the workspace's CNN, InsectSet32 the synthetic run of the same CNN):
    its time and memory are not reported."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    shutil.copytree(runs.mfcc.model_dir, tmp_path / "models/baseline")
    card = load_model(runs.mfcc.model_dir).card
    facts = {k: card[k] for k in ("best_epoch", "epochs_run", "best_val_f1_macro")} | {"train_seconds": 12.5}
    facts |= {"resources": {"model": card["model"], "peak_memory_mb": 900.0}}
    facts["resources"]["model"] = other.get("model", card["model"])
    facts["best_epoch"] = card["best_epoch"] + other.get("best_epoch", 0)  # another run of the same model
    (tmp_path / "curves/baseline").mkdir(parents=True)
    (tmp_path / "curves/baseline/metrics.json").write_text(json.dumps(facts), encoding="utf-8")
    folders = [f"--{k}={tmp_path / k}" for k in ("scores", "per-class", "confusion", "metrics")]
    cmd = [sys.executable, str(ROOT / "stages/evaluate.py"), "baseline", f"--features={runs.mfcc.features_dir}"]
    cmd += ["--models=models", "--curves=curves", *folders]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "metrics/baseline.json").read_text())
    assert (metrics["train_seconds"], metrics["resources"]) == ((12.5, facts["resources"]) if kept else (None, None))
    assert metrics["recording"]["n_recordings"] == 3  # scored all the same
