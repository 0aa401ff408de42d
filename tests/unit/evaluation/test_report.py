"""The report's Phase 3 summary over seeds (mean, spread and range of each headline score, computed here by hand) and
its ensemble row."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from speciesclf.evaluation.report import build_summary, render_markdown

TARGETS = {
    "phase2a_min_accuracy": 0.4,
    "phase2a_min_f1_macro": 0.15,
    "phase2b_min_f1_macro": 0.2,
    "stretch_min_accuracy": 0.5,
    "stretch_min_f1_macro": 0.25,
    "min_f1_rare": 0.05,
    "stretch_min_f1_rare": 0.1,
    "max_gpu_memory_gb_audiocnn": 4.0,
    "max_gpu_memory_gb_audiocnnv2": 5.0,
}


def _run(acc: float, f1: float, rare: float | None) -> dict:
    scores = {"accuracy": acc, "f1_macro": f1, "f1_rare": rare}
    others = {"f1_common": f1, "f1_weighted": f1, "balanced_accuracy": acc, "top5_accuracy": 1.0}
    recording = {k: v if v is None else v + 0.1 for k, v in scores.items()}
    return {**scores, **others, "recording": {**recording, "n_recordings": 10}}


def _summary(seeds: list[int], runs: list[dict]) -> dict:
    metrics = {"baseline": _run(0.3, 0.1, 0.0)} | {f"phase3/seed_{s}": r for s, r in zip(seeds, runs, strict=True)}
    per_class = {"baseline": [{"species": "a", "train_count": 3, "support": 1, "f1": 0.0}]}
    return build_summary(metrics, per_class, [], TARGETS, seeds=seeds)


def test_phase3_over_three_seeds_is_mean_sample_sd_and_range() -> None:
    summary = _summary([1, 2, 3], [_run(0.5, 0.40, 0.2), _run(0.6, 0.45, None), _run(0.7, 0.35, 0.4)])
    window = summary["phase3"]["window"]
    assert window["accuracy"]["mean"] == pytest.approx(0.6)
    assert window["accuracy"]["std"] == pytest.approx(statistics.stdev([0.5, 0.6, 0.7]))
    assert (window["f1_macro"]["min"], window["f1_macro"]["max"]) == (0.35, 0.45)
    assert window["f1_rare"]["mean"] == pytest.approx(0.3)  # a seed without rare species does not count as 0
    assert summary["phase3"]["recording"]["accuracy"]["mean"] == pytest.approx(0.7)
    report = render_markdown(summary)
    assert "## Phase 3 over 3 seeds" in report
    assert "| window | 0.600 ± 0.100 (0.500–0.700) | 0.400 ± 0.050 (0.350–0.450) |" in report


def test_one_seed_has_no_spread_and_no_seed_no_table() -> None:
    one = _summary([7], [_run(0.5, 0.4, 0.2)])
    assert one["phase3"]["window"]["f1_macro"] == {"mean": 0.4, "std": 0.0, "min": 0.4, "max": 0.4}
    assert "## Phase 3 over 1 seed (" in render_markdown(one)
    assert "Phase 3" not in render_markdown(_summary([], []))


def test_the_ensemble_is_a_row_after_phase3_with_its_members_named() -> None:
    ensemble = _run(0.8, 0.6, 0.5) | {"members": ["phase2b", "phase3/seed_7"]}
    metrics = {"baseline": _run(0.3, 0.1, 0.0), "ensemble": ensemble, "phase3/seed_7": _run(0.5, 0.4, 0.2)}
    per_class = {"baseline": [{"species": "a", "train_count": 3, "support": 1, "f1": 0.0}]}
    summary = build_summary(metrics, per_class, [], TARGETS, seeds=[7])
    assert summary["delta_vs_baseline"]["ensemble"]["f1_macro"] == pytest.approx(0.5)
    assert summary["verdict"]["best_run"] == "ensemble"
    report = render_markdown(summary)
    rows = [line.split(" | ")[0] for line in report.splitlines() if line.startswith("| ")]
    assert rows[:4] == ["| run", "| baseline", "| phase3/seed_7", "| ensemble"]
    assert "averages the window probabilities of phase2b, phase3/seed_7" in report
    assert "recording accuracy 0.900, macro-F1 0.700" in report
    assert "## Ensemble" not in render_markdown(_summary([7], [_run(0.5, 0.4, 0.2)]))


def _validated(run: dict, acc: float, f1: float) -> dict:
    return run | {
        "validation": {"window": {"accuracy": acc, "f1_macro": f1}, "recording": {"accuracy": acc, "f1_macro": f1}}
    }


@pytest.mark.parametrize(("ensemble_f1", "choice"), [(0.61, "the ensemble"), (0.55, "phase3/seed_7")])
def test_validation_chooses_between_the_ensemble_and_its_best_member(ensemble_f1: float, choice: str) -> None:
    members = {
        "phase2b": _validated(_run(0.5, 0.4, 0.2), 0.5, 0.45),
        "phase3/seed_7": _validated(_run(0.5, 0.4, 0.2), 0.7, 0.6),
    }
    ensemble = _validated(_run(0.8, 0.6, 0.5), 0.72, ensemble_f1) | {"members": list(members), "averaged": "recording"}
    metrics = {"baseline": _run(0.3, 0.1, 0.0), "ensemble": ensemble, **members}
    per_class = {"baseline": [{"species": "a", "train_count": 3, "support": 1, "f1": 0.0}]}
    report = render_markdown(build_summary(metrics, per_class, [], TARGETS, seeds=[7]))
    assert (
        "averages the recording probabilities of phase2b, phase3/seed_7 (params `ensemble.runs`) (its members" in report
    )
    assert (
        f"the ensemble scores accuracy 0.720, macro-F1 {ensemble_f1:.3f}; its best member there, phase3/seed_7, "
        f"0.700 and 0.600: validation prefers {choice}."
    ) in report


def _stable(collapsed: bool, signs: list[str] = ()) -> dict:
    return {"stability": {"collapsed": collapsed, "signs": list(signs)}}


def test_the_go_no_go_judges_every_row_of_the_study_s_table_strictly() -> None:
    metrics = {
        "baseline": _run(0.3, 0.1, 0.0) | _stable(False),
        "phase2a": _run(0.41, 0.15, 0.06) | _stable(False),  # F1 exactly at 0.15: "> 0.15" fails
        "phase2b": _run(0.45, 0.22, 0.04) | _stable(True, ["concentrated"]),
    }
    per_class = {"baseline": [{"species": "a", "train_count": 3, "support": 1, "f1": 0.0}]}
    verdict = build_summary(metrics, per_class, [], TARGETS)["verdict"]
    judged = {phase: [(c["metric"], c["pass"]) for c in verdict[phase]["checks"]] for phase in ("phase2a", "phase2b")}
    assert judged == {
        "phase2a": [("accuracy", True), ("f1_macro", False), ("f1_rare", True), ("stability", True)],
        "phase2b": [("f1_macro", True), ("f1_macro", True), ("f1_rare", False), ("stability", False)],
    }
    assert verdict["phase2b"]["checks"][1]["target"] == 0.15  # 2B beats 2A: 2A's own F1 is the target
    assert verdict["stretch"]["checks"][0]["run"] == "phase2b" and not verdict["stretch"]["go"]
    assert verdict["collapsed"] == ["phase2b"]
    report = render_markdown(build_summary(metrics, per_class, [], TARGETS))
    assert "phase2a f1_macro 0.150 > 0.15: fail" in report
    assert "phase2b f1_macro 0.220 > phase2a's 0.150: pass" in report
    assert "phase2b stable (concentrated): fail" in report and "phase2a stable (no sign of collapse): pass" in report
    assert "): phase2b." in report  # the collapsed runs, after the rule
    assert "phase1" not in verdict and "phase1" not in report  # a summary without Phase 1 (InsectSet32's before it)


def test_phase_1_is_judged_on_stability_and_listed_among_the_collapsed() -> None:
    metrics = {
        "baseline": _run(0.3, 0.1, 0.0) | _stable(False),
        "phase1": _run(0.06, 0.01, 0.0) | _stable(True, ["concentrated", "diverged"]),
        "phase2a": _run(0.41, 0.16, 0.06) | _stable(False),
        "phase2b": _run(0.45, 0.22, 0.07) | _stable(False),
    }
    per_class = {"baseline": [{"species": "a", "train_count": 3, "support": 1, "f1": 0.0}]}
    summary = build_summary(metrics, per_class, [], TARGETS)
    assert summary["verdict"]["collapsed"] == ["phase1"] and summary["verdict"]["phase2a"]["go"]
    report = render_markdown(summary)
    assert "- phase1 (the study's Phase 1 collapsed): phase1 stable (concentrated, diverged): fail" in report
    assert report.index("| phase1 |") < report.index("| phase2a |")  # the study's order: 0, 1, 2A, 2B


def test_the_best_gamma_is_chosen_on_validation_and_named_with_the_command_when_it_is_not_the_default() -> None:
    def swept(val: float, test_f1: float) -> dict:
        return _run(0.4, test_f1, 0.05) | {"best_val_f1_macro": val}

    metrics = {"baseline": _run(0.3, 0.1, 0.0)} | {
        "gamma_sweep/gamma_1.0": swept(0.20, 0.30),  # best on test, not on validation: not chosen
        "gamma_sweep/gamma_2.0": swept(0.25, 0.15),
        "gamma_sweep/gamma_3.0": swept(0.25, 0.20),  # ties 2.0 on validation: the smaller γ wins
    }
    per_class = {"baseline": [{"species": "a", "train_count": 3, "support": 1, "f1": 0.0}]}
    summary = build_summary(metrics, per_class, [1.0, 2.0, 3.0], TARGETS, default_gamma=1.0)
    best = summary["best_gamma"]
    assert (best["gamma"], best["val_f1_macro"], best["f1_macro"], best["differs"]) == (2.0, 0.25, 0.15, True)
    report = render_markdown(summary)
    assert "| 2.0 | 0.250 | 0.400 | 0.150 | 0.050 | 0.150 |" in report  # val F1, then test: rare and common F1
    assert "Best γ on validation macro-F1: **2.0**" in report and "`dvc exp run -S loss.gamma=2.0` re-runs" in report
    same = render_markdown(build_summary(metrics, per_class, [1.0, 2.0, 3.0], TARGETS, default_gamma=2.0))
    assert "It is `loss.gamma` already." in same and "dvc exp run" not in same


def _resources(model: str, device: str, peak_mb: float) -> dict:
    memory = "CUDA max allocated" if device.startswith("cuda") else "process peak RSS"
    return {
        "resources": {
            "model": model,
            "parameters": 1234567,
            "device": device,
            "precision": "fp32",
            "batch_size": 32,
            "processes": 1,
            "peak_memory_mb": peak_mb,
            "memory": memory,
            "seconds_per_epoch": 12.34,
        }
    }


def test_resources_are_shown_and_gpu_memory_is_judged_only_on_gpu_runs() -> None:
    per_class = {"baseline": [{"species": "a", "train_count": 3, "support": 1, "f1": 0.0}]}
    on_cpu = {run: _run(0.4, 0.2, 0.1) | _resources("AudioCNN", "cpu", 2100.0) for run in ("baseline", "phase2a")}
    report = render_markdown(build_summary(on_cpu, per_class, [], TARGETS))
    assert "| baseline | AudioCNN | 1,234,567 | cpu | fp32 | 32 × 1 | 2100 (process peak RSS) | 12.3 |" in report
    assert "not judged: no AudioCNN or AudioCNNv2 run trained on a GPU" in report
    on_gpu = {
        "baseline": _run(0.4, 0.2, 0.1) | _resources("AudioCNN", "cuda:0", 4096.0),  # 4.00 GB: "< 4" fails
        "phase2b": _run(0.4, 0.2, 0.1) | _resources("AudioCNNv2", "cuda", 1536.0),
    }
    summary = build_summary(on_gpu, per_class, [], TARGETS)
    assert [(c["run"], c["pass"]) for c in summary["verdict"]["memory"]] == [("baseline", False), ("phase2b", True)]
    report = render_markdown(summary)
    assert "baseline 4.00 GB < 4 GB (batch 32): fail; phase2b 1.50 GB < 5 GB (batch 32): pass" in report


def _report(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "speciesclf", "report", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("summary", "out", "message"),
    [
        (None, "r.md", "missing.json: not found"),
        ("{not json", "r.md", "missing.json: not valid JSON"),
        ('{"models": {}}', "r.md", "missing.json: not a summary the report stage writes (no key 'delta_vs_baseline')"),
        ("[1, 2]", "r.md", "missing.json: not a summary the report stage writes"),
        (b"\xff\xfe{}", "r.md", "missing.json: not valid JSON"),
        (None, "/proc/r.md", "missing.json: not found"),  # the input is read first
    ],
)
def test_report_on_a_bad_summary_is_one_line_naming_it(
    tmp_path: Path, summary: str | bytes | None, out: str, message: str
) -> None:
    if isinstance(summary, str):
        (tmp_path / "missing.json").write_text(summary)
    elif isinstance(summary, bytes):
        (tmp_path / "missing.json").write_bytes(summary)
    r = _report(tmp_path, "missing.json", "--out", out)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("speciesclf report: error: ") and message in r.stderr, r.stderr
    assert not (tmp_path / "r.md").exists() and [p.name for p in tmp_path.iterdir()] in ([], ["missing.json"])


@pytest.mark.parametrize("out", ["/proc/r.md", "file/r.md"])
def test_report_into_a_place_that_cannot_be_written_is_one_line(tmp_path: Path, out: str) -> None:
    summary = _summary([42], [_run(0.5, 0.4, 0.2)])
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "file").write_text("a file, not a folder")
    r = _report(tmp_path, "summary.json", "--out", out)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"error: {out.rsplit('/', 1)[0]}" in r.stderr or f"error: {out}" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "summary.json"]
    r = _report(tmp_path, "summary.json", "--out", "r.md")  # the same summary renders where it can be written
    assert r.returncode == 0 and (tmp_path / "r.md").read_text().startswith("# speciesclf: results")
