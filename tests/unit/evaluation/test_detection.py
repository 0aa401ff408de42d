"""Detection measured: sed_eval's event matching on events whose score is known, and the whole measurement on a
tiny model with fitted thresholds over soundscapes of its tone species."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speciesclf.detections import Detection, write_raven
from speciesclf.evaluation.detection import GLOBAL_GRID, measure_detection, render_markdown, score_events
from tiny import FREQS, SR, _train_tiny_model, tone

SPECIES = ["owl", "wren", "rail"]


def test_perfect_detections_score_one() -> None:
    truth = {"a.wav": [(1.0, 3.0, "owl"), (10.0, 12.0, "wren")], "b.wav": [(4.0, 5.0, "owl")]}
    scores = score_events(truth, truth, SPECIES, collar=1.0)
    assert scores["macro"] == scores["overall"] == {"precision": 1.0, "recall": 1.0, "f_measure": 1.0}
    assert scores["per_species"]["owl"] == {"bouts": 2, "detections": 2, "precision": 1.0, "recall": 1.0,
                                           "f_measure": 1.0}  # fmt: skip
    assert "rail" not in scores["per_species"]  # neither calls nor is detected


def test_a_species_never_detected_counts_zero_in_the_macro_mean() -> None:
    truth = {"a.wav": [(1.0, 3.0, "owl"), (10.0, 12.0, "wren")]}
    found = {"a.wav": [(0.5, 3.0, "owl")]}  # within the 1 s collar of owl's bout; wren missed
    scores = score_events(truth, found, SPECIES, collar=1.0)
    assert scores["per_species"]["wren"]["f_measure"] == 0.0
    assert scores["macro"]["f_measure"] == 0.5 and scores["overall"]["recall"] == 0.5


def test_an_onset_beyond_the_collar_and_a_species_that_never_calls_are_false_detections() -> None:
    truth = {"a.wav": [(1.0, 3.0, "owl")]}
    found = {"a.wav": [(2.5, 4.0, "owl"), (20.0, 22.0, "rail")]}
    scores = score_events(truth, found, SPECIES, collar=1.0)
    assert scores["per_species"]["owl"] == {"bouts": 1, "detections": 1, "precision": 0.0, "recall": 0.0,
                                           "f_measure": 0.0}  # fmt: skip
    assert scores["per_species"]["rail"]["detections"] == 1 and scores["per_species"]["rail"]["bouts"] == 0
    assert scores["macro"]["f_measure"] == 0.0  # the macro mean is over species that call: owl alone
    assert scores["overall"]["precision"] == 0.0


@pytest.fixture(scope="module")
def model_with_thresholds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train_tiny_model(tmp_path_factory.mktemp("detection"), epochs=3, thresholds=True)


def _soundscape(folder: Path, name: str, turns: list[str | None]) -> tuple[Path, Path]:
    """One second per turn: a tone species, or quiet noise (None); the truth: one bout per turn of a species."""
    rng = np.random.default_rng(len(turns))
    parts = [tone(SR, 1.0, FREQS[s], i) if s else 0.02 * rng.standard_normal(SR) for i, s in enumerate(turns)]
    sf.write(folder / f"{name}.wav", np.concatenate(parts).astype(np.float32), SR)
    bouts = [Detection(name, s, float(i), i + 1.0, 1, 1, 1) for i, s in enumerate(turns) if s]
    write_raven(folder / f"{name}.selections.txt", bouts, (0.0, 8000.0), many=False, scores=False)
    return folder / f"{name}.wav", folder / f"{name}.selections.txt"


def test_measure_detection_scores_fitted_and_global_thresholds(model_with_thresholds: Path, tmp_path: Path) -> None:
    card = json.loads((model_with_thresholds / "model.json").read_text(encoding="utf-8"))
    assert set(card["thresholds"]["species"]) == set(FREQS)
    tune = [_soundscape(tmp_path, "t0", ["cricket", None, "cicada", None, "katydid", None])]
    held = [_soundscape(tmp_path, f"h{i}", [None, "katydid", None, "cricket", "cicada", None]) for i in range(2)]
    metrics, curve = measure_detection(model_with_thresholds, tune, held, hop_seconds=0.5, collar=1.0)
    assert metrics["soundscapes"] == {"tune": 1, "held_out": 2} and metrics["held_out_bouts"] == 6
    assert metrics["thresholds_rule"]["fitted_on"] == "validation windows"
    for key in ("fitted", "tuned_global", "oracle_global"):
        assert all(0 <= v <= 1 for level in ("macro", "overall") for v in metrics[key][level].values())
    # no honest choice beats the oracle on macro event-F1
    assert metrics["oracle_global"]["macro"]["f_measure"] >= metrics["tuned_global"]["macro"]["f_measure"]
    assert [row["threshold"] for row in curve] == list(GLOBAL_GRID)
    spread = metrics["fitted_minus_tuned_per_soundscape"]
    assert spread["better"] + spread["same"] + spread["worse"] == 2
    report = render_markdown({"model": "tiny", **metrics})
    assert "| fitted per species" in report and "| cricket | 2 |" in report


def test_soundscapes_of_species_the_model_lacks_are_not_measured(model_with_thresholds: Path, tmp_path: Path) -> None:
    audio, table = _soundscape(tmp_path, "s", [None, "cricket", None])
    write_raven(table, [Detection("s", "sp03_whistle", 1.0, 2.0, 1, 1, 1)], (0.0, 8000.0), many=False, scores=False)
    metrics, curve = measure_detection(model_with_thresholds, [(audio, table)], [(audio, table)], 0.5, 1.0)
    assert metrics == {"measured": False, "reason": "the soundscapes' species are not the model's (1 it lacks, e.g. "
                       "sp03_whistle)"} and curve == []  # fmt: skip
    assert "not measured; the soundscapes' species" in render_markdown({"model": "tiny", **metrics})
