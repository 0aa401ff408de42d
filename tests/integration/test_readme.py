"""README.md's results agree with the committed reports they quote: the default study's table with
metrics/summary.json and metrics/selected.json, InsectSet32's with studies/insectset32/*.json. A re-run that moves
a number fails here until the README says the new one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# the synthetic table's rows, by the text they start with, and the run they quote
RUNS = {
    "baseline:": "baseline",
    "phase1:": "phase1",
    "phase2a:": "phase2a",
    "phase2b:": "phase2b",
    "phase3:": "phase3/seed_42",
    "ensemble:": "ensemble",
}


def _row(prefix: str) -> list[str]:
    """The cells after the first of the README table row that starts with ``prefix``."""
    rows = [line for line in README.splitlines() if line.startswith(f"| {prefix}")]
    assert len(rows) == 1, f"README: {len(rows)} rows start with {prefix!r}"
    return [cell.strip() for cell in rows[0].strip("|").split("|")[1:]]


def _f(x: float) -> str:
    return f"{x:.3f}"


def _chosen_cells(metrics: dict) -> list[str]:
    """A selection's row: its choice, cross-validated macro-F1, test accuracy and test macro-F1."""
    return [
        metrics["chosen"],
        *map(_f, (metrics["cross_validated"]["f1_macro"], *map(metrics["test"].get, ("accuracy", "f1_macro")))),
    ]


@pytest.mark.parametrize("prefix", RUNS)
def test_the_default_study_table_quotes_the_summary(prefix: str) -> None:
    run = json.loads((ROOT / "metrics" / "summary.json").read_text())["models"][RUNS[prefix]]
    quoted = [run["accuracy"], run["f1_macro"], run["f1_rare"], run["recording"]["accuracy"]]
    assert _row(prefix) == [*map(_f, quoted), _f(run["recording"]["f1_macro"])]


def test_the_select_sentence_quotes_metrics_selected() -> None:
    m = json.loads((ROOT / "metrics" / "selected.json").read_text())
    test = m["test"]
    assert f"it scores {_f(test['accuracy'])} recording accuracy\nand {_f(test['f1_macro'])} macro-F1" in README
    means = sorted(_f(c["mean"]["f1_macro"]) for c in m["candidates"].values())
    said = re.search(r"\(macro-F1 ([\d.]+) against ([\d.]+) and ([\d.]+) alone\)", README)
    assert said and sorted(said.groups()) == means and said[1] == _f(m["candidates"][m["chosen"]]["mean"]["f1_macro"])


def test_the_insectset32_table_quotes_the_study() -> None:
    study = ROOT / "studies" / "insectset32"
    chosen = json.loads((study / "selected.json").read_text())
    assert _row("chosen by cross-validation (`select`):") == _chosen_cells(chosen)
    mean, sd = chosen["test_over_repeats"]["mean"], chosen["test_over_repeats"]["sd"]
    assert _row(f"the same selection, {len(chosen['repeats'])} repeats") == [
        " / ".join(r["chosen"] for r in chosen["repeats"]),
        " / ".join(_f(r["cross_validated"]["f1_macro"]) for r in chosen["repeats"]),
        f"{_f(mean['accuracy'])} ± {_f(sd['accuracy'])}",
        f"{_f(mean['f1_macro'])} ± {_f(sd['f1_macro'])}",
    ]


def test_the_insectset32_table_quotes_the_from_scratch_study() -> None:
    scratch = json.loads((ROOT / "studies" / "insectset32" / "scratch.json").read_text())
    assert _row("from scratch, chosen by cross-validation (`select_scratch`):") == _chosen_cells(scratch)


def test_the_detection_paragraph_quotes_metrics_detection() -> None:
    m = json.loads((ROOT / "metrics" / "detection.json").read_text())
    n = m["soundscapes"]
    assert (
        f"over {n['held_out']} held-out synthetic soundscapes ({m['held_out_seconds']:g} s, {m['held_out_bouts']}"
        in README
    )
    said = re.search(r"reach a macro event-F1 of ([\d.]+) against ([\d.]+) for one\nglobal threshold tuned on (\d+) "
                     r"other soundscapes \(([\d.]+) for", README)  # fmt: skip
    assert said and said.groups() == (
        _f(m["fitted"]["macro"]["f_measure"]),
        _f(m["tuned_global"]["macro"]["f_measure"]),
        str(n["tune"]),
        _f(m["oracle_global"]["macro"]["f_measure"]),
    )
    spread = m["fitted_minus_tuned_per_soundscape"]
    assert f"the difference is {spread['mean']:.3f} ± {spread['sd']:.3f}" in README
    assert (
        f"{m['species_fitted']} of the {m['species']} species have validation windows of their own"
        in README.replace("\n", " ")
    )


def test_the_detection_paragraph_quotes_the_seed_spread() -> None:
    """The fitted thresholds against the tuned global one at every seed of .ci/spread.json."""
    runs = json.loads((ROOT / ".ci" / "spread.json").read_text())
    v = runs["values"]["metrics/detection.json"]
    fitted, tuned = v["fitted.macro.f_measure"], v["tuned_global.macro.f_measure"]
    lost = sum(f < t for f, t in zip(fitted, tuned, strict=True))
    said = (
        f"over the {len(runs['seeds'])} training seeds of `.ci/spread.json` the fitted thresholds average "
        f"{_f(sum(fitted) / len(fitted))} against {_f(sum(tuned) / len(tuned))} for the tuned global one, and lose "
        f"on {lost} of the {len(fitted)}."
    )
    assert said in README.replace("\n", " ")
