"""The real pipeline, tiny, in a temporary git repository: `dvc repro`, `dvc exp run -S`, `dvc metrics diff`.

Slow (a couple of minutes: twelve stages, each a fresh Python with torch), so marked `slow`; `make test` runs it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from dvcrepo import commit, copy_project, ran_stages, sh

pytestmark = pytest.mark.slow

METRIC_KEYS = {
    "accuracy",
    "balanced_accuracy",
    "f1_macro",
    "f1_weighted",
    "f1_rare",
    "top5_accuracy",
    "n_test",
    "train_seconds",
    "best_epoch",
    "epochs_run",
    "window",
    "recording",
}
RUNS = [
    "baseline",
    "phase1",
    "phase2a",
    "phase2b",
    "gamma_sweep/gamma_1.0",
    "gamma_sweep/gamma_2.0",
    "gamma_sweep/gamma_3.0",
    "phase3/seed_42",
]


def tiny_params(params: dict) -> dict:
    params["synthetic"].update(n_species=5, imbalance=3.0, clip_seconds=1.0)
    params["features"].update(clip_seconds=1.0, train_hop_seconds=1.0)
    params["train"].update(epochs=2, warmup_epochs=1, patience=2)
    params["augment"].update(random_crop=True, freq_mask=4, time_mask=10, time_shift=10, mixup_alpha=0.4)  # wired
    params["soundscapes"].update(recordings=4, seconds=30.0, hop_seconds=0.5, collar_seconds=1.0)
    return params


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("pipeline"))
    params = tiny_params(yaml.safe_load((repo / "params.yaml").read_text()))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(repo, "project")  # dvclive needs a commit to exist (it fails on an empty repo)
    sh(repo, "dvc", "repro")
    commit(repo, "baseline run")
    sh(repo, "git", "tag", "baseline")
    return repo


def test_repro_writes_every_metric_plot_and_report(repo: Path) -> None:
    for run in RUNS:
        metrics = json.loads((repo / f"metrics/{run}.json").read_text())
        assert set(metrics) >= METRIC_KEYS, f"{run}: missing {METRIC_KEYS - set(metrics)}"
        assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["n_test"] > 0
        assert {"accuracy", "f1_macro", "f1_rare"} <= set(metrics["recording"])
        assert set(json.loads((repo / f"metrics/eval/{run}/scores.json").read_text())) >= METRIC_KEYS - {
            "train_seconds"
        }
        per_class = json.loads((repo / f"metrics/per_class/{run}/per_class.json").read_text())
        assert {"species", "f1", "precision", "recall", "support", "train_count"} <= set(per_class[0])
        confusion = json.loads((repo / f"metrics/confusion/{run}/confusion.json").read_text())
        assert len(confusion) == metrics["n_test"] and {"actual", "predicted"} == set(confusion[0])
        assert (repo / f"metrics/train/{run}/plots/metrics/val_f1_macro.tsv").exists()
    ensemble = json.loads((repo / "metrics/ensemble.json").read_text())
    assert ensemble["members"] == ["phase2b", "phase3/seed_42"]
    assert ensemble["n_test"] == metrics["n_test"] and {"accuracy", "f1_macro"} <= set(ensemble["recording"])
    assert (repo / "metrics/per_class/ensemble/per_class.json").exists()
    summary = json.loads((repo / "metrics/summary.json").read_text())
    assert set(summary["models"]) == {*RUNS, "ensemble"}
    assert [s["gamma"] for s in summary["gamma_sweep"]] == [1.0, 2.0, 3.0]
    assert summary["phase3"]["seeds"] == [42] and summary["phase3"]["window"]["f1_macro"]["std"] == 0.0
    phase3 = json.loads((repo / "models/phase3/seed_42/model.json").read_text())
    assert phase3["features"]["front_end"] == "logmel" and phase3["loss"]["name"] == "logit_adjusted"
    assert phase3["augment"]["time_mask"] > 0 and phase3["augment"]["random_crop"] and phase3["train"]["seed"] == 42
    baseline = json.loads((repo / "models/baseline/model.json").read_text())
    assert baseline["features"]["front_end"] == "mfcc" and "augment" not in baseline  # the study's, untouched
    assert {"phase1", "phase2a", "phase2b", "stretch", "collapsed", "memory"} <= set(summary["verdict"])
    assert json.loads((repo / "models/phase1/model.json").read_text())["loss"] == {
        "name": "class_weighted",
        "power": 1.0,
        "label_smoothing": 0.0,
    }
    resources = json.loads((repo / "metrics/phase2b.json").read_text())["resources"]
    assert resources["model"] == "AudioCNNv2" and resources["parameters"] > 4_000_000 and resources["device"] == "cpu"
    for run in RUNS:  # every trained model ships its detection thresholds, fitted on validation
        card = json.loads((repo / f"models/{run}/model.json").read_text())
        assert set(card["thresholds"]["species"]) == set(card["species"]), run
    detection = json.loads((repo / "metrics/detection.json").read_text())
    assert detection["soundscapes"] == {"tune": 2, "held_out": 2} and detection["model"] == "models/phase2b"
    assert {"fitted", "tuned_global", "oracle_global"} <= set(detection)
    assert (repo / "metrics/detection/curve.csv").read_text().startswith("threshold,macro_precision")
    assert "# Detection in soundscapes" in (repo / "reports/detection.md").read_text()
    report = (repo / "reports/results.md").read_text()
    for heading in ("All models", "γ sensitivity", "Phase 3 over 1 seed", "Ensemble", "rarest species", "Go / no-go"):
        assert heading in report
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status").stdout
    plots = sh(repo, "dvc", "plots", "show", "-o", "plots_html")
    assert "WARNING" not in plots.stdout + plots.stderr


def _lock(repo: Path) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def test_exp_run_gamma_reruns_exactly_the_dependent_stages(repo: Path) -> None:
    before = _lock(repo)
    r = sh(repo, "dvc", "exp", "run", "-S", "loss.gamma=1.0")
    ran = ran_stages(r.stdout)
    phase2 = {"train_phase2a", "train_phase2b", "evaluate@phase2a", "evaluate@phase2b"}
    # phase2b: an ensemble member, and the detector; check_params: any edit of params.yaml is validated whole
    assert ran == phase2 | {"ensemble", "report", "detection", "check_params"}
    after = _lock(repo)
    changed = {name for name in before if before[name] != after[name]}
    assert changed <= ran and {"train_phase2a", "train_phase2b"} <= changed
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status").stdout
    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "baseline", "--json").stdout)
    assert "metrics/phase2a.json" in diff and "metrics/baseline.json" not in diff
    assert "loss.gamma" in sh(repo, "dvc", "params", "diff", "baseline").stdout
    shown = sh(repo, "dvc", "exp", "show", "--json").stdout
    assert '"loss"' in shown and "phase2a.json" in shown


@pytest.mark.parametrize(
    ("override", "featurized"),
    [("phase3.features.front_end=pcen", True), ("phase3.loss=balanced_softmax", False), ("augment.masks=1", False)],
)
def test_a_phase3_param_reruns_phase3_alone(repo: Path, override: str, featurized: bool) -> None:
    ran = ran_stages(sh(repo, "dvc", "exp", "run", "-S", override).stdout)
    phase3 = {"train_phase3@42", "evaluate@phase3", "ensemble", "check_params"}
    phase3 |= {"featurize_phase3"} if featurized else set()
    assert phase3 <= ran <= phase3 | {"report"}  # the report re-runs only if phase 3's scores changed


def test_gain_and_background_train_on_log_mel_and_stop_on_mfcc(repo: Path) -> None:
    decibels = ["-S", "augment.gain_db=6", "-S", "augment.background_prob=0.5"]
    r = sh(repo, "dvc", "exp", "run", "-S", "phase3.features.front_end=logmel", *decibels)
    assert "train_phase3@42" in ran_stages(r.stdout)
    card = json.loads((repo / "models/phase3/seed_42/model.json").read_text())
    assert card["augment"]["gain_db"] == 6 and card["augment"]["background_prob"] == 0.5
    r = sh(repo, "dvc", "exp", "run", "-S", "phase3.features.front_end=mfcc", *decibels, check=False)
    assert r.returncode != 0
    assert "error: augment.gain_db: works on log-mel features (dB); the features are mfcc" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


BIRDNET = [
    "phase3.features.front_end=birdnet",
    "+phase3.features.sample_rate=48000",
    "+phase3.features.clip_seconds=3.0",
    "+phase3.features.train_hop_seconds=1.5",
    "models.phase3=EmbeddingLinear",
    "ensemble.runs=[phase2a,phase2b]",  # members must cut the same windows: BirdNET's are 3 s
    "augment.random_crop=false",  # a crop, masks and shifts need frames; mixup (on) works on embeddings
    "augment.freq_mask=0",
    "augment.time_mask=0",
    "augment.time_shift=0",
]


@pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None, reason="the birdnet extra is not installed")
def test_a_birdnet_head_is_phase3_set_by_params_and_reported(repo: Path) -> None:
    sh(repo, "git", "checkout", "-q", "--", ".")
    r = sh(repo, "dvc", "exp", "run", *(a for o in BIRDNET for a in ("-S", o)))
    assert {"featurize_phase3", "train_phase3@42", "evaluate@phase3", "report"} <= ran_stages(r.stdout)
    card = json.loads((repo / "models/phase3/seed_42/model.json").read_text())
    assert card["model"] == "EmbeddingLinear" and card["pretrained"]["model"].startswith("BirdNET_GLOBAL_6K_V2.4")
    assert card["features"]["front_end"] == "birdnet"
    diff = sh(repo, "dvc", "metrics", "diff", "baseline", "--json").stdout
    assert "metrics/phase3/seed_42.json" in json.loads(diff)
    assert "| phase3/seed_42 |" in (repo / "reports/results.md").read_text()


def test_mistyped_param_is_rejected_by_name(repo: Path) -> None:
    r = sh(repo, "dvc", "exp", "run", "-S", "+loss.gama=1.0", check=False)
    assert r.returncode != 0
    assert "loss.gama: unknown key" in r.stdout + r.stderr


def test_a_new_gamma_is_trained_reported_and_plotted_without_editing_dvc_yaml(repo: Path) -> None:
    sh(repo, "git", "checkout", "-q", "--", ".")  # the committed run's params (a failed experiment leaves its own)
    r = sh(repo, "dvc", "exp", "run", "-S", "gamma_sweep.gammas=[1.0,2.0,3.0,0.5]")
    assert {"gamma_sweep@0.5", "evaluate@gamma_sweep", "report"} <= ran_stages(r.stdout)
    assert "gamma_sweep@1.0" not in ran_stages(r.stdout)  # the other γ come from the cache
    plots = sh(repo, "dvc", "plots", "show", "-o", "plots_gamma")
    assert "WARNING" not in plots.stdout + plots.stderr
    page = (repo / "plots_gamma/index.html").read_text()
    for plot in ("metrics_train_gamma_sweep_gamma_0_5_plots_metrics_val_f1_macro_tsv",
                 "metrics_per_class_gamma_sweep_gamma_0_5_per_class_json",
                 "metrics_confusion_gamma_sweep_gamma_0_5_confusion_json"):  # fmt: skip
        assert f"vegaEmbed('#{plot}'" in page, plot
    assert "| 0.5 |" in (repo / "reports/results.md").read_text()


def test_two_runs_give_identical_lock_hashes(repo: Path) -> None:
    sh(repo, "git", "checkout", "-q", "--", ".")  # back to the committed run, leaving the experiment
    sh(repo, "dvc", "checkout", "-q")
    before = _lock(repo)
    sh(repo, "dvc", "repro", "--force", "--single-item", "prepare", "featurize", "train_baseline", "evaluate@baseline")
    after = _lock(repo)
    for stage in ("prepare", "featurize", "train_baseline", "evaluate@baseline"):
        assert after[stage] == before[stage], stage


def test_phase1_at_a_huge_learning_rate_is_judged_collapsed_and_at_the_study_s_rate_stable(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The study's Phase 1 on a small but learnable collection (4 well-separated species, 6 epochs)."""
    repo = copy_project(tmp_path_factory.mktemp("phase1"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["synthetic"].update(
        n_species=4,
        imbalance=2.0,
        min_clips=12,
        clip_seconds=1.0,
        snr_db=[10.0, 20.0],
        distractor_prob=0.0,
        confusable_fraction=0.0,
    )
    params["features"].update(clip_seconds=1.0, train_hop_seconds=1.0)
    params["train"].update(epochs=6, warmup_epochs=1, patience=6)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(repo, "project")
    sh(repo, "dvc", "repro", "evaluate@phase1")
    stable = json.loads((repo / "metrics/phase1.json").read_text())["stability"]
    assert not stable["collapsed"] and stable["signs"] == [] and stable["species_predicted"] >= 3, stable

    r = sh(repo, "dvc", "exp", "run", "-S", "train.lr=10", "evaluate@phase1")
    assert {"train_phase1", "evaluate@phase1"} <= ran_stages(r.stdout)
    unstable = json.loads((repo / "metrics/phase1.json").read_text())["stability"]
    assert unstable["collapsed"] and unstable["signs"], unstable
    assert unstable["top_species_share"] > 0.5 and unstable["species_predicted"] < stable["species_predicted"]
