"""CI's cross-machine reproducibility rule (.ci/repro_check.py) on the committed metrics and the committed spread:
every seed's real re-training passes it, a real collapse fails it, and the spread covers every compared number."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / ".ci" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rc = _load("repro_check")


@pytest.fixture(scope="module")
def spread() -> dict:
    return json.loads(rc.SPREAD.read_text())


@pytest.fixture(scope="module")
def committed() -> dict[str, dict[str, float]]:
    """The metrics as committed (git HEAD), as CI compares them."""
    out = {}
    for f in rc.metric_files(ROOT):
        shown = subprocess.run(["git", "show", f"HEAD:{f}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode == 0:
            out[f] = rc.numbers(json.loads(shown.stdout))
    return out


def _sample(spread: dict, i: int) -> dict[str, dict[str, float]]:
    """The i-th seed's metrics, as measured by .ci/spread.py."""
    return {f: {k: v[i] for k, v in keys.items() if v[i] is not None} for f, keys in spread["values"].items()}


def _without(spread: dict, i: int) -> dict:
    """The spread measured without the i-th seed (so a seed is not judged by a yardstick it helped make)."""
    out = copy.deepcopy(spread)
    out["seeds"].pop(i)
    for keys in out["values"].values():
        for v in keys.values():
            v.pop(i)
    return out


def test_spread_covers_every_compared_number(committed, spread):
    """A metric added without re-measuring the spread would fail CI on the next other machine: fail here first."""
    missing = [
        f"{f}: {key}" for f, keys in committed.items() for key in keys
        if rc.compared(key) and key not in spread["values"].get(f, {})
    ]  # fmt: skip
    assert not missing, f"re-run .ci/spread.py: {missing[:5]}"
    assert len(spread["seeds"]) >= 4


def test_spread_first_sample_is_the_committed_run(committed, spread):
    """The committed results are the first seed's sample, so the yardstick belongs to the committed pipeline."""
    first = _sample(spread, 0)
    moved = [f"{f}: {k}" for f, keys in committed.items() for k, v in keys.items()
             if rc.compared(k) and k in first.get(f, {}) and first[f][k] != v]  # fmt: skip
    assert not moved, f"metrics re-made since the spread was measured: {moved[:5]}"


def test_committed_metrics_pass_both_rules(committed, spread):
    assert rc.exactly(committed, committed) == []
    assert rc.within_spread(committed, committed, spread) == []


def test_every_other_seed_passes_as_a_reproduction(committed, spread):
    """Each other seed is a real re-training on another path, as another CPU kind gives: it must pass, judged by
    the spread of the remaining seeds (which then include the committed run)."""
    for i in range(1, len(spread["seeds"])):
        problems = rc.within_spread(committed, _sample(spread, i), _without(spread, i))
        assert problems == [], f"seed {spread['seeds'][i]}: {problems[:5]}"
    assert rc.exactly(committed, _sample(spread, 1)) != []  # and another path is not the same bytes


def test_a_collapsed_run_fails(committed, spread):
    """Phase 1's real, collapsed numbers in place of Phase 2A's (what a broken loss gives): far outside the bound."""
    broken = copy.deepcopy(committed)
    broken["metrics/phase2a.json"] = committed["metrics/phase1.json"]
    problems = rc.within_spread(committed, broken, spread)
    assert any("metrics/phase2a.json: accuracy " in p for p in problems)
    assert any("metrics/phase2a.json: recording.accuracy " in p for p in problems)


def test_a_number_that_never_moved_must_be_equal(committed, spread):
    """Counts and settings do not move across seeds: one more test clip is a different pipeline, not noise."""
    changed = copy.deepcopy(committed)
    changed["metrics/phase2b.json"]["n_test"] += 1
    assert rc.within_spread(committed, changed, spread) == [
        f"metrics/phase2b.json: n_test committed {committed['metrics/phase2b.json']['n_test']:.6g} reproduced "
        f"{changed['metrics/phase2b.json']['n_test']:.6g} (bound 0)"
    ]


def test_missing_spread_and_missing_numbers_are_problems(committed, spread):
    thin = copy.deepcopy(spread)
    del thin["values"]["metrics/phase2b.json"]["accuracy"]
    assert any("accuracy has no measured spread" in p for p in rc.within_spread(committed, committed, thin))
    gone = copy.deepcopy(committed)
    del gone["metrics/phase2b.json"]["accuracy"]
    assert any("accuracy committed" in p for p in rc.within_spread(committed, gone, spread))


def test_bounds_pool_by_kind():
    """A number whose own seeds agreed by chance takes its kind's pooled spread, with Student's t for the pool's
    degrees of freedom; a number that never moved in any run of its kind must be equal."""
    values = {
        "a.json": {"accuracy": [0.5, 0.5, 0.5], "f1_macro": [0.1, 0.2, 0.3]},
        "b.json": {"accuracy": [0.4, 0.6, 0.5], "n_test": [10, 10, 10], "f1_macro": [0.2, None, 0.2]},
    }
    bound = rc.bounds(values)
    t4, t3 = (stats.t.ppf(1 - rc.ODDS / 2, dof) for dof in (4, 3))  # accuracy: 2 + 2, f1_macro: 2 + 1
    assert bound["a.json", "accuracy"] == pytest.approx(t4 * 2**0.5 * (0.01 / 2) ** 0.5)  # the mean of 0, 0.01
    assert bound["b.json", "accuracy"] == pytest.approx(t4 * 2**0.5 * 0.1)  # its own
    assert bound["b.json", "f1_macro"] == pytest.approx(t3 * 2**0.5 * (0.01 / 2) ** 0.5)
    assert bound["b.json", "n_test"] == 0.0
    assert rc.kind("delta_vs_baseline.phase1.accuracy") == "delta/accuracy"
    assert not rc.compared("models.baseline.best_epoch") and rc.compared("models.baseline.accuracy")
    assert not rc.compared("best_gamma.gamma") and rc.compared("best_gamma.default_gamma")
    assert not rc.compared("per_species.fitted.sp01_trill.recall") and rc.compared("fitted.macro.recall")


def test_a_number_some_seeds_lack_may_be_missing(committed, spread):
    """Detection lists a species only where it was detected: such a number may be absent from a reproduction."""
    f = "metrics/detection.json"
    optional = [k for k, v in spread["values"][f].items() if None in v and k in committed[f] and rc.compared(k)]
    required = [k for k, v in spread["values"][f].items() if None not in v and k in committed[f] and rc.compared(k)]
    thinner = copy.deepcopy(committed)
    for k in optional + required[:1]:
        del thinner[f][k]
    assert rc.within_spread(committed, thinner, spread) == [
        f"{f}: {required[0]} committed {committed[f][required[0]]:.6g}, missing from the reproduction"
    ]
