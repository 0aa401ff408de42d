"""The select stage on a tiny real collection: two candidates and their average cross-validated on 2 folds, the
chosen model written as one directory, and `speciesclf predict` on the test recordings giving exactly the
recording-level test scores select reported. Bad recipes: one line naming the recipe file and the key."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from sklearn.metrics import accuracy_score, f1_score

from dvcrepo import ROOT, commit, copy_project, env, ran_stages, sh

SR = 16000
FREQS = {"cricket": 600.0, "katydid": 1500.0, "cicada": 3200.0}
RECIPE = {
    "folds": 2,
    "seed": 7,
    "train": {"epochs": 2, "warmup_epochs": 0, "batch_size": 8},
    "candidates": {
        "mfcc": {"model": "AudioCNN", "loss": {"name": "cross_entropy"}},
        "logmel": {"features": {"front_end": "logmel"}, "model": "AudioCNN", "loss": {"name": "logit_adjusted"}},
    },
    "averages": [["mfcc", "logmel"]],
}


def _tone(path: Path, freq: float, seed: int, seconds: float) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(round(SR * seconds)) / SR
    wave = 0.4 * np.sin(2 * np.pi * freq * t + rng.uniform(0, np.pi)) + 0.05 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), SR, subtype="PCM_16")


def _project(tmp: Path, recipe: dict) -> Path:
    """A folder collection (a file per recording, 1-2.5 s long), params.yaml for it and a recipe file."""
    for s, (label, freq) in enumerate(FREQS.items()):
        for r in range(6):
            _tone(tmp / "recordings" / label / f"{r}.wav", freq * (1 + 0.03 * r), 10 * s + r, 1.0 + 0.3 * r)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source="folder", path="recordings")
    params["features"].update(sample_rate=SR, clip_seconds=1.0, train_hop_seconds=0.5)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return tmp


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["python", *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _select(cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run(cwd, str(ROOT / "stages/select_model.py"), "recipe.yaml", "prepared", "selected", "selected.json")


@pytest.fixture(scope="module")
def selected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = _project(tmp_path_factory.mktemp("select"), RECIPE)
    r = _run(tmp, str(ROOT / "stages/prepare.py"), "prepared")
    assert r.returncode == 0, r.stderr
    r = _select(tmp)
    assert r.returncode == 0, r.stderr
    return tmp


def test_every_candidate_and_the_average_is_scored_on_each_fold(selected: Path) -> None:
    metrics = json.loads((selected / "selected.json").read_text())
    assert set(metrics["candidates"]) == {"mfcc", "logmel", "mfcc + logmel"}
    for row in metrics["candidates"].values():
        assert len(row["folds"]) == 2
        assert row["mean"]["f1_macro"] == pytest.approx(np.mean([f["f1_macro"] for f in row["folds"]]))
    best = max(metrics["candidates"], key=lambda c: metrics["candidates"][c]["mean"]["f1_macro"])
    assert metrics["chosen"] == best
    assert metrics["recordings"] == {"cross_validated": 15, "test": 3}


def test_the_model_directory_holds_the_chosen_candidates(selected: Path) -> None:
    metrics = json.loads((selected / "selected.json").read_text())
    card = json.loads((selected / "selected" / "model.json").read_text())
    chosen = metrics["chosen"].split(" + ")
    if len(chosen) == 1:
        assert "members" not in card and card["model"] == "AudioCNN"
    else:
        assert card["members"] == [f"{c}_seed42" for c in chosen]  # params.yaml's seed: the recipe's seeds the folds
        for m in card["members"]:
            member = json.loads((selected / "selected" / "members" / m / "model.json").read_text())
            assert member["species"] == card["species"] == sorted(FREQS)
            assert member["epochs_run"] == 2 and member["best_val_f1_macro"] is None  # no validation set chose it
    # detection thresholds: fitted on the chosen models' out-of-fold windows (the refit has no held-out data)
    fitted = card["thresholds"]
    assert fitted["fitted_on"] == "out-of-fold windows" and set(fitted["species"]) == set(FREQS)
    assert fitted["windows"] > metrics["recordings"]["cross_validated"]  # longer recordings give several windows
    assert all(0 < s["threshold"] < 1 and s["positives"] >= 4 for s in fitted["species"].values())


def test_predict_on_the_test_recordings_gives_the_reported_scores(selected: Path) -> None:
    manifest = _rows(selected / "prepared" / "manifest.csv")
    test = {str((selected / "prepared" / r["path"]).resolve()): r["label"] for r in manifest if r["split"] == "test"}
    assert len(test) == 3  # one recording per species, each one file
    r = _run(selected, "-m", "speciesclf.predict", "selected", *test, "--top-k", "1", "--out", "predictions.csv")
    assert r.returncode == 0, r.stderr
    rows = [row for row in _rows(selected / "predictions.csv") if row["level"] == "recording"]
    predicted = {str(Path(row["path"]).resolve()): row["species"] for row in rows}
    assert set(predicted) == set(test)
    truth, guess = [test[p] for p in sorted(test)], [predicted[p] for p in sorted(test)]
    reported = json.loads((selected / "selected.json").read_text())["test"]
    assert accuracy_score(truth, guess) == reported["accuracy"]
    assert f1_score(truth, guess, labels=sorted(set(truth)), average="macro", zero_division=0) == reported["f1_macro"]


@pytest.fixture(scope="module")
def repeated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same collection as a study folder: params.yaml holds only what it changes (its defaults name the
    project's), and the recipe runs the whole selection twice."""
    tmp = _project(tmp_path_factory.mktemp("repeated"), {**RECIPE, "repeats": 2})
    study = {"defaults": [str(ROOT / "params.yaml")], "data": {"source": "folder", "path": "recordings"}}
    study["features"] = {"sample_rate": SR, "clip_seconds": 1.0, "train_hop_seconds": 0.5}
    (tmp / "params.yaml").write_text(yaml.safe_dump(study))
    assert _run(tmp, str(ROOT / "stages/prepare.py"), "prepared").returncode == 0
    r = _run(tmp, str(ROOT / "stages/select_model.py"), "recipe.yaml", "prepared", "selected", "selected.json",
             "--report", "report.md", "--title", "Three insects")  # fmt: skip
    assert r.returncode == 0, r.stderr
    return tmp


def test_a_repeated_selection_reports_each_repeat_and_writes_the_first(repeated: Path, selected: Path) -> None:
    metrics = json.loads((repeated / "selected.json").read_text())
    first, second = metrics["repeats"]
    assert (first["seed"], second["seed"]) == (7, 8)  # the folds of repeat r are shuffled by seed + r
    assert (first["chosen"], first["test"]) == (metrics["chosen"], metrics["test"])
    # the first repeat is the selection without repeats: same folds, seeds, choice, model and test scores
    once = json.loads((selected / "selected.json").read_text())
    assert (metrics["candidates"], metrics["test"]) == (once["candidates"], once["test"])
    for name in ("model.pt", "model.json"):
        for a in (repeated / "selected").rglob(name):
            assert a.read_bytes() == (selected / "selected" / a.relative_to(repeated / "selected")).read_bytes()
    for k in ("accuracy", "f1_macro"):
        assert metrics["test_over_repeats"]["mean"][k] == pytest.approx((first["test"][k] + second["test"][k]) / 2)
        assert metrics["test_over_repeats"]["sd"][k] == pytest.approx(
            abs(first["test"][k] - second["test"][k]) / 2**0.5
        )


def test_the_report_shows_every_candidate_the_choice_and_each_repeat(repeated: Path) -> None:
    metrics = json.loads((repeated / "selected.json").read_text())
    report = (repeated / "report.md").read_text()
    assert report.startswith("# Three insects\n")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in report.splitlines() if line.startswith("| ")}
    for name, c in metrics["candidates"].items():
        key = f"{name} (chosen)" if name == metrics["chosen"] else name
        assert f"{c['mean']['f1_macro']:.3f} ± {c['sd']['f1_macro']:.3f}" in rows[key]
    for r in metrics["repeats"]:
        assert f"| {r['seed']} | {r['chosen']} | {r['cross_validated']['f1_macro']:.3f} |" in report
    assert f"accuracy {metrics['test']['accuracy']:.3f}, macro-F1 {metrics['test']['f1_macro']:.3f}" in report


@pytest.mark.parametrize(
    ("change", "message"),
    [  # each key's rule: tests/unit/selection/test_recipe.py; here the stage's one line, and a rule needing the data
        ({"candidats": {}}, "candidats: unknown key"),
        (
            {"candidates": {"x": {"model": "AudioCNN", "loss": {"name": "hinge"}}}},
            "candidates.x.loss.name: got 'hinge'",
        ),
        ({"folds": 6}, "folds: got 6; species"),
    ],
)
def test_a_bad_recipe_is_one_line_naming_the_file_and_key(selected: Path, change: dict, message: str) -> None:
    (selected / "bad").mkdir(exist_ok=True)
    (selected / "bad" / "recipe.yaml").write_text(yaml.safe_dump({**RECIPE, **change}))
    (selected / "bad" / "params.yaml").write_text((selected / "params.yaml").read_text())
    r = _run(selected / "bad", str(ROOT / "stages/select_model.py"), "recipe.yaml", "../prepared", "out", "m.json")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: recipe.yaml: ") and message in lines[0], r.stderr
    assert not (selected / "bad" / "out").exists() and not (selected / "bad" / "m.json").exists()


@pytest.mark.slow
def test_a_study_folder_is_a_pipeline_of_its_own_that_dvc_tracks(tmp_path: Path) -> None:
    """The InsectSet32 study's dvc.yaml, run on a tiny collection outside the repository: its stages run in the
    study folder with layered params, `dvc status` then says what a change makes stale, and the project's own
    `dvc repro` leaves the study alone."""
    repo = copy_project(tmp_path / "repo")
    study = repo / "studies" / "tiny"
    study.mkdir(parents=True)
    shutil.copy(ROOT / "studies" / "insectset32" / "dvc.yaml", study / "dvc.yaml")
    for s, (label, freq) in enumerate(FREQS.items()):
        for r in range(6):
            _tone(tmp_path / "recordings" / label / f"{r}.wav", freq * (1 + 0.03 * r), 10 * s + r, 1.0 + 0.3 * r)
    params = {"defaults": ["../../params.yaml"], "data": {"source": "folder", "path": "../../../recordings"}}
    params["features"] = {"sample_rate": SR, "clip_seconds": 1.0, "train_hop_seconds": 0.5}
    (study / "params.yaml").write_text(yaml.safe_dump(params))
    (study / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    scratch = {**RECIPE, "candidates": {"mfcc": RECIPE["candidates"]["mfcc"]}, "averages": []}
    (study / "recipe-scratch.yaml").write_text(yaml.safe_dump(scratch))
    commit(repo, "a study")

    ran = ran_stages(sh(repo, "dvc", "repro", "studies/tiny/dvc.yaml").stdout)
    assert ran == {f"studies/tiny/dvc.yaml:{s}" for s in ("check_params", "prepare", "select", "select_scratch")}
    assert "up to date" in sh(repo, "dvc", "status", "studies/tiny/dvc.yaml").stdout
    metrics = json.loads((study / "selected.json").read_text())
    assert metrics["recordings"] == {"cross_validated": 15, "test": 3}
    assert f"accuracy {metrics['test']['accuracy']:.3f}" in (study / "report.md").read_text()
    assert json.loads((study / "scratch.json").read_text())["chosen"] == "mfcc"

    def stale() -> set[str]:
        status = json.loads(sh(repo, "dvc", "status", "--json", "studies/tiny/dvc.yaml").stdout or "{}")
        return {name.removeprefix("studies/tiny/dvc.yaml:") for name in status}

    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(text.replace("  lr: 0.002", "  lr: 0.003"))  # the project's, under the study
    assert stale() == {"check_params", "select", "select_scratch"}
    (repo / "params.yaml").write_text(text)
    (study / "recipe.yaml").write_text(yaml.safe_dump({**RECIPE, "folds": 3}))
    assert stale() == {"select"}
    (study / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    params["data"]["min_recordings"] = 4
    (study / "params.yaml").write_text(yaml.safe_dump(params))
    assert stale() == {"check_params", "prepare", "select", "select_scratch"}
    # the project's pipeline is dvc.yaml here, not the studies (a dry run stops at featurize: nothing is prepared)
    dry = sh(repo, "dvc", "repro", "--dry", check=False).stdout
    assert "Running stage 'prepare'" in dry and "studies/tiny" not in dry


def test_too_many_folds_stop_select_before_any_feature_is_extracted(
    selected: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Extracting features can take most of an hour (BirdNET at several slowings): a recipe that cannot be dealt
    into its folds, in any repeat, must stop before it."""
    from speciesclf.params import load_params
    from speciesclf.selection import select as stage
    from speciesclf.selection.recipe import RecipeError, augment_keys_of, load_recipe
    from speciesclf.training.augment import AugmentConfig

    def extract(*args: object) -> None:
        raise AssertionError("features extracted before the folds were dealt")

    monkeypatch.setattr(stage, "_featurize", extract)
    (selected / "many.yaml").write_text(yaml.safe_dump({**RECIPE, "folds": 6, "repeats": 2}))
    params = load_params(selected / "params.yaml")
    recipe = load_recipe(selected / "many.yaml", params, ["AudioCNN"], augment_keys_of(AugmentConfig))
    with pytest.raises(RecipeError, match=r"many\.yaml: folds: got 6; species"):
        stage.select(selected / "prepared" / "manifest.csv", recipe, 40, selected / "never")
    assert not (selected / "never").exists()
