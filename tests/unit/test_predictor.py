"""An ensemble whose members cut different windows (another time expansion): its window scores on one time grid,
its recording scores as select computes them, and detections from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speciesclf.models.saved import load_model, save_ensemble
from speciesclf.predictor import Predictor
from tiny import FREQS, SR, _train_tiny_model, tone


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Members: one on 1 s windows, one on audio slowed 2x (its 1 s windows are 0.5 s of the recording)."""
    base = tmp_path_factory.mktemp("ensemble")
    plain = _train_tiny_model(base / "plain", epochs=1)
    slowed = _train_tiny_model(base / "slowed", epochs=1, time_expansion=2.0)
    members = {}
    for name, d in (("plain", plain), ("slowed", slowed)):
        model = load_model(d)
        members[name] = (model.network, model.card)
    save_ensemble(
        base / "ensemble", members, {"model": "ensemble", "train_counts": members["plain"][1]["train_counts"]}
    )
    return base / "ensemble", plain, slowed


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "three.wav"
    sf.write(path, np.concatenate([tone(SR, 1.0, FREQS[s], i) for i, s in enumerate(FREQS)]), SR)
    return path


def test_window_scores_lie_on_the_shortest_windows_with_the_others_read_at_their_centres(
    ensemble: tuple[Path, Path, Path], recording: Path
) -> None:
    directory, plain, slowed = ensemble
    predictor = Predictor(directory)
    assert not predictor.one_grid and predictor.clip_seconds == 0.5  # the slowed member's windows set the grid
    proba, starts = predictor.window_proba(recording)
    p_plain, s_plain = Predictor(plain).window_proba(recording)
    p_slowed, s_slowed = Predictor(slowed).window_proba(recording)
    assert starts == s_slowed == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5] and s_plain == [0.0, 1.0, 2.0]
    for i, start in enumerate(starts):
        covering = int((start + 0.25) // 1.0)  # the plain window (1 s, one after the other) holding the centre
        np.testing.assert_allclose(proba[i], (p_slowed[i] + p_plain[covering]) / 2, rtol=0, atol=1e-12)


def test_the_recording_is_each_members_mean_over_its_own_windows(
    ensemble: tuple[Path, Path, Path], recording: Path
) -> None:
    predictor = Predictor(ensemble[0])
    totals: dict = {}
    for _ in predictor.windows(recording, totals):
        pass
    by_member = np.mean([p.mean(axis=0) for p, _ in predictor.member_windows(recording)], axis=0)
    np.testing.assert_allclose(predictor.recording_of(totals), by_member, rtol=0, atol=1e-12)


def test_such_an_ensemble_writes_detections(ensemble: tuple[Path, Path, Path], recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.txt"
    cmd = [sys.executable, "-m", "speciesclf.predict", str(ensemble[0]), str(recording), "--format", "raven",
           "--min-score", "0.2", "--out", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()[1:]]
    assert rows and all(float(b) * 2 == round(float(b) * 2) for _, _, _, b, *_ in rows)  # on the 0.5 s grid
