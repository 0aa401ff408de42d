"""Phase 3's ablation table, read from experiment refs of a real git repository (as `dvc exp run` leaves them)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from speciesclf.experiments.ablation import collect, main, params_changed, summarise

RECIPE = {"phase3": {"seeds": [42, 43], "loss": "logit_adjusted"}, "augment": {"freq_mask": 0}}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def _experiment(repo: Path, name: str, params: dict, scores: dict[int, tuple[float, float, float]]) -> None:
    """A commit holding params.yaml and metrics/phase3/seed_<s>.json, under refs/exps like DVC's."""
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    (repo / "metrics/phase3").mkdir(parents=True, exist_ok=True)
    for seed, (val, acc, f1) in scores.items():
        run = {"best_val_f1_macro": val, "f1_macro": f1 - 0.01, "recording": {"accuracy": acc, "f1_macro": f1}}
        (repo / f"metrics/phase3/seed_{seed}.json").write_text(json.dumps(run))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", name)
    _git(repo, "update-ref", f"refs/exps/ab/cdef/{name}", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    _experiment(tmp_path, "ablation-recipe", RECIPE, {42: (0.60, 0.70, 0.62), 43: (0.58, 0.66, 0.60)})
    masks = {**RECIPE, "augment": {"freq_mask": 8}}
    _experiment(tmp_path, "ablation-masks", masks, {42: (0.64, 0.69, 0.61), 43: (0.62, 0.71, 0.63)})
    return tmp_path


def test_each_variant_gets_its_changes_means_and_spreads_and_validation_chooses(repo: Path) -> None:
    summary = summarise(collect(repo, "ablation-", ["recipe", "masks"]))
    recipe, masks = summary["variants"]["recipe"], summary["variants"]["masks"]
    assert recipe["changes"] == {} and masks["changes"] == {"augment.freq_mask": 8}
    val = masks["scores"]["val macro-F1"]
    assert val["per_seed"] == {"42": 0.64, "43": 0.62}
    assert val["mean"] == pytest.approx(0.63) and val["std"] == pytest.approx(0.0141421356)
    assert recipe["scores"]["test accuracy"]["mean"] == pytest.approx(0.68)
    assert recipe["scores"]["test rare F1"]["mean"] is None  # not in these metrics: shown as –, not as 0
    assert summary["chosen_on_validation"] == "masks"  # on validation, though its test accuracy is no better


def test_the_table_is_written_whole_with_deltas_against_the_recipe(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "ablation"
    assert main(["recipe", "masks", "--repo", str(repo), "--out", str(out)]) == 0
    md = (out.parent / "ablation.md").read_text()
    assert "| recipe | (the recipe) | 0.590 ± 0.014 | 0.680 ± 0.028 |" in md
    assert "| **masks** | `augment.freq_mask=8` | 0.630 ± 0.014 (+0.040) | 0.700 ± 0.014 (+0.020) |" in md
    assert json.loads((out.parent / "ablation.json").read_text())["chosen_on_validation"] == "masks"


def test_a_missing_experiment_is_named(repo: Path) -> None:
    with pytest.raises(SystemExit, match="experiment 'ablation-mixup': not found in refs/exps"):
        collect(repo, "ablation-", ["recipe", "mixup"])


def test_params_changed_lists_added_removed_and_changed_keys() -> None:
    a = {"x": {"y": 1, "z": [1, 2]}, "gone": 1}
    b = {"x": {"y": 2, "z": [1, 2]}, "new": {"k": "v"}}
    assert params_changed(a, b) == {"gone": None, "new.k": "v", "x.y": 2}
