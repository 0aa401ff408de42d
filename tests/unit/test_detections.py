"""Detections from `speciesclf predict --format raven|audacity`: runs of windows merged into events, and the tables
read back with Python's csv module (not crowsetta or pandas, which wrote them)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import speciesclf
from speciesclf.detections import Detection, Detector
from tiny import FREQS, SR, _train_tiny_model, tone

RAVEN_HEAD = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)"]


def test_consecutive_windows_above_a_threshold_merge_into_one_detection() -> None:
    species = ["owl", "wren"]
    detector = Detector("x.wav", species, np.array([0.5, 0.6]), clip_seconds=1.0)
    proba = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    detector.add([0.0, 1.0], proba[:2])  # two batches: a run goes on across them
    detector.add([2.0, 3.0, 3.5], proba[2:])  # the last window aligned to the end of a 4.5 s recording
    assert detector.finish(duration=4.5) == [
        Detection("x.wav", "owl", 0.0, 2.0, 0.9, pytest.approx(0.8), 2),
        Detection("x.wav", "wren", 2.0, 3.0, 0.8, 0.8, 1),
        Detection("x.wav", "owl", 3.0, 4.0, 0.6, 0.6, 1),
        Detection("x.wav", "wren", 3.5, 4.5, 0.9, 0.9, 1),
    ]


def test_a_species_with_an_infinite_threshold_is_never_detected() -> None:
    detector = Detector("x.wav", ["owl", "wren"], np.array([np.inf, 0.5]), clip_seconds=1.0)
    detector.add([0.0], np.array([[1.0, 0.0]]))
    assert detector.finish(1.0) == []


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train_tiny_model(tmp_path_factory.mktemp("detect"), epochs=3)


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two recordings in which the three tone species take turns, second by second."""
    folder = tmp_path_factory.mktemp("field")
    order = {"dawn": ["cricket", "cricket", "cicada", "katydid", "katydid"], "dusk": ["cicada", "cricket", "cricket"]}
    for name, turns in order.items():
        wave = np.concatenate([tone(SR, 1.0, FREQS[s], i) for i, s in enumerate(turns)])
        sf.write(folder / f"{name}.wav", wave, SR)
    return folder


def predict(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "speciesclf.predict", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _window_scores(model_dir: Path, inputs: Path, tmp_path: Path) -> list[dict[str, str]]:
    """predict's own CSV of every species' score in every window (hop 0.5 s)."""
    out = tmp_path / "all.csv"
    r = predict(model_dir, inputs, "--hop", "0.5", "--top-k", str(len(FREQS)), "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with open(out, newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row["level"] == "window"]


def _threshold(rows: list[dict[str, str]]) -> float:
    """Halfway between the two scores around the median: some windows above, some below, none on it (the tiny
    model is far from sure of anything, so a fixed 0.5 would find nothing)."""
    scores = sorted({float(r["probability"]) for r in rows})
    mid = len(scores) // 2
    return (scores[mid - 1] + scores[mid]) / 2


def _expected_runs(rows: list[dict[str, str]], wav: Path, min_score: float) -> list[tuple[float, float, str]]:
    """The runs of windows at or above ``min_score``, worked out here from the window scores."""
    starts = sorted({float(row["start_seconds"]) for row in rows})
    duration = sf.info(wav).duration
    runs = []
    for species in FREQS:
        score = {float(r["start_seconds"]): float(r["probability"]) for r in rows if r["species"] == species}
        begin = None
        for i, s in enumerate(starts):
            if score[s] >= min_score and begin is None:
                begin = s
            if begin is not None and (i + 1 == len(starts) or score[starts[i + 1]] < min_score):
                runs.append((begin, min(s + 1.0, duration), species))
                begin = None
    return sorted(runs)


def test_a_raven_table_holds_the_runs_of_the_window_scores(model_dir: Path, field: Path, tmp_path: Path) -> None:
    scores = _window_scores(model_dir, field / "dawn.wav", tmp_path)
    threshold = _threshold(scores)
    out = tmp_path / "dawn.selections.txt"
    args = ("--format", "raven", "--hop", "0.5", "--min-score", repr(threshold), "--out", out)
    r = predict(model_dir, field / "dawn.wav", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with open(out, encoding="utf-8") as f:
        assert f.readline().rstrip("\n").split("\t")[:7] == RAVEN_HEAD
    rows = _read_tsv(out)
    expected = _expected_runs(scores, field / "dawn.wav", threshold)
    assert 0 < len(expected) < len(scores)  # runs merged: fewer detections than windows above
    got = sorted((float(r["Begin Time (s)"]), float(r["End Time (s)"]), r["Species"]) for r in rows)
    assert got == expected
    assert [int(r["Selection"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {(r["View"], r["Channel"], r["Low Freq (Hz)"], r["High Freq (Hz)"]) for r in rows} == {
        ("Spectrogram 1", "1", "50.0", "8000.0")  # the model's band: f_min to the Nyquist of 16 kHz
    }
    assert all(threshold <= float(r["Mean Score"]) <= float(r["Score"]) <= 1 and int(r["Windows"]) >= 1 for r in rows)


def test_one_raven_table_for_several_recordings_names_each(model_dir: Path, field: Path, tmp_path: Path) -> None:
    out = tmp_path / "night.txt"
    threshold = repr(_threshold(_window_scores(model_dir, field, tmp_path)))
    r = predict(model_dir, field, "--format", "raven", "--min-score", threshold, "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = _read_tsv(out)
    assert {r["Begin File"] for r in rows} == {"dawn.wav", "dusk.wav"}
    assert {Path(r["Begin Path"]) for r in rows} == {field / "dawn.wav", field / "dusk.wav"}


def test_a_folder_gets_one_table_per_recording(model_dir: Path, field: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    threshold = _threshold(_window_scores(model_dir, field, tmp_path))
    for fmt in ("raven", "audacity"):
        r = predict(model_dir, field, "--format", fmt, "--min-score", repr(threshold), "--out", f"{out}/", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "dawn.labels.txt",
        "dawn.selections.txt",
        "dusk.labels.txt",
        "dusk.selections.txt",
        "provenance.json",  # the last run's: model, thresholds, version
        "summary.csv",
    ]
    raven = _read_tsv(out / "dusk.selections.txt")
    assert raven and "Begin File" not in raven[0]
    # the Audacity label track: start, end, "species;score" per line, the same events as the Raven table
    with open(out / "dusk.labels.txt", newline="", encoding="utf-8") as f:
        labels = [line for line in csv.reader(f, delimiter="\t")]
    events = sorted((float(a), float(b), label.split(";")[0]) for a, b, label in labels)
    assert events == sorted((float(r["Begin Time (s)"]), float(r["End Time (s)"]), r["Species"]) for r in raven)
    assert all(threshold - 1e-4 <= float(label.split(";")[1]) <= 1 for _, _, label in labels)


def test_species_file_keeps_only_the_listed_species(model_dir: Path, field: Path, tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("# only this one\ncricket\n", encoding="utf-8")
    out = tmp_path / "o.txt"
    r = predict(model_dir, field / "dawn.wav", "--format", "raven", "--species", tmp_path / "list.txt", "--out", out,
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert {row["Species"] for row in _read_tsv(out)} <= {"cricket"}
    r = predict(model_dir, field / "dawn.wav", "--species", tmp_path / "list.txt", "--top-k", "3", cwd=tmp_path)
    assert {row["species"] for row in csv.DictReader(r.stdout.splitlines()) if row["species"]} == {"cricket"}
    (tmp_path / "bad.txt").write_text("cricket\nnightingale\n", encoding="utf-8")
    r = predict(model_dir, field / "dawn.wav", "--species", tmp_path / "bad.txt", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr == (
        f"error: --species {tmp_path / 'bad.txt'}:2: 'nightingale' is not one of the model's species\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "raven"], "--format raven writes tables: give --out a file or a folder"),
        (["--format", "audacity", "--out", "one.txt"], "--format audacity writes one label track per recording"),
        (["--format", "raven", "--min-score", "1.5", "--out", "o.txt"], "--min-score 1.5: expected a score from 0"),
    ],
)
def test_table_arguments_that_cannot_work_are_one_line(
    model_dir: Path, field: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    r = predict(model_dir, field, *args, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "one.txt").exists() and not (tmp_path / "o.txt").exists()


def test_two_recordings_with_one_name_cannot_share_a_folder(model_dir: Path, field: Path, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    sf.write(tmp_path / "other" / "dawn.flac", tone(SR, 1.0, FREQS["cicada"], 1), SR, format="FLAC")
    r = predict(model_dir, field / "dawn.wav", tmp_path / "other", "--format", "raven", "--out", "t/", cwd=tmp_path)
    assert r.returncode == 2 and "would both write dawn.selections.txt" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def fitted_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train_tiny_model(tmp_path_factory.mktemp("fitted"), epochs=3, thresholds=True)


def _detected(out: Path) -> list[tuple[float, float, str]]:
    return sorted((float(r["Begin Time (s)"]), float(r["End Time (s)"]), r["Species"]) for r in _read_tsv(out))


def test_the_cards_thresholds_apply_by_default_and_other_sources_on_request(
    fitted_model: Path, field: Path, tmp_path: Path
) -> None:
    wav = field / "dawn.wav"
    scores = _window_scores(fitted_model, wav, tmp_path)
    card = json.loads((fitted_model / "model.json").read_text(encoding="utf-8"))["thresholds"]["species"]
    # per species: the runs of that species' windows at or above its own fitted threshold
    expected = sorted(run for s in FREQS for run in _expected_runs(scores, wav, card[s]["threshold"]) if run[2] == s)
    runs = {}
    for name, extra in {
        "card": [],
        "global": ["--min-score", "0.3"],
        "none": ["--thresholds", "none"],
        "file": ["--thresholds", str(tmp_path / "t.json")],
    }.items():
        if name == "file":
            (tmp_path / "t.json").write_text(json.dumps({"cricket": 0.99, "cicada": 0.01}), encoding="utf-8")
        out = tmp_path / f"{name}.txt"
        r = predict(fitted_model, wav, "--format", "raven", "--hop", "0.5", *extra, "--out", out, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        runs[name] = _detected(out)
        facts = json.loads((tmp_path / f"{name}.provenance.json").read_text(encoding="utf-8"))
        assert facts["model_dir"] == str(fitted_model) and facts["speciesclf"] == speciesclf.__version__
        assert facts["card_sha256"] == hashlib.sha256((fitted_model / "model.json").read_bytes()).hexdigest()
        runs[name + " thresholds"] = facts["thresholds"]
    assert runs["card"] == expected
    assert runs["card thresholds"]["species"] == {s: card[s]["threshold"] for s in card}
    assert runs["global"] == _expected_runs(scores, wav, 0.3)
    assert runs["global thresholds"]["source"] == runs["none thresholds"]["source"] == "global"
    assert runs["none"] == _expected_runs(scores, wav, 0.5)
    # the file's species take its thresholds, the one it lacks (katydid) --min-score's default, 0.5
    assert runs["file thresholds"]["species"] == {"cricket": 0.99, "cicada": 0.01, "katydid": 0.5}
    assert {s for _, _, s in runs["file"]} <= {"cricket", "cicada", "katydid"} and any(
        s == "cicada" for _, _, s in runs["file"]
    )


def test_a_thresholds_file_naming_another_species_is_one_line(fitted_model: Path, field: Path, tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text('{"nightingale": 0.4}', encoding="utf-8")
    out = tmp_path / "o.txt"
    r = predict(fitted_model, field, "--format", "raven", "--thresholds", tmp_path / "t.json", "--out", out,
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and r.stderr == (
        f"error: --thresholds {tmp_path / 't.json'}: 'nightingale' is not one of the model's species\n"
    )
    assert not out.exists()
    r = predict(fitted_model, field, "--thresholds", "none", cwd=tmp_path)  # csv: no detections to threshold
    assert r.returncode == 2 and "--thresholds and --min-score apply to detections" in r.stderr


def test_a_model_without_fitted_thresholds_says_so_and_uses_the_global_one(
    model_dir: Path, field: Path, tmp_path: Path
) -> None:
    r = predict(model_dir, field / "dusk.wav", "--format", "raven", "--out", tmp_path / "o.txt", cwd=tmp_path)
    assert r.returncode == 0 and "no fitted thresholds" in r.stderr and "every species at 0.5" in r.stderr


def test_the_summary_counts_each_recordings_detections(fitted_model: Path, field: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    r = predict(fitted_model, field, "--format", "raven", "--hop", "0.5", "--out", f"{out}/", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        summary = list(csv.DictReader(f))
    assert {row["path"] for row in summary} == {str(field / "dawn.wav"), str(field / "dusk.wav")}
    for name in ("dawn", "dusk"):
        table = _read_tsv(out / f"{name}.selections.txt")
        rows = [row for row in summary if Path(row["path"]).stem == name and row["species"]]
        assert {row["species"]: int(row["detections"]) for row in rows} == {
            s: sum(t["Species"] == s for t in table) for s in {t["Species"] for t in table}
        }
    facts = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    assert facts["hop_seconds"] == 0.5 and facts["thresholds"]["source"] == "card"


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_a_file_damaged_midway_gives_detections_up_to_the_damage_and_a_note(
    fitted_model: Path, field: Path, tmp_path: Path, fmt: str
) -> None:
    wave = np.concatenate([tone(SR, 1.0, FREQS[s], i) for i, s in enumerate(["cricket", "cicada"] * 4)])
    sf.write(tmp_path / f"whole.{fmt}", wave, SR, format=fmt.upper())
    data = (tmp_path / f"whole.{fmt}").read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / f"cut.{fmt}").write_bytes(data[: len(data) // 2])  # a recorder that stopped midway
    shutil.copy(field / "dusk.wav", tmp_path / "in" / "dusk.wav")  # and a good file after it
    out = tmp_path / "t"
    r = predict(fitted_model, tmp_path / "in", "--format", "raven", "--min-score", "0.01", "--out", f"{out}/",
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"cut.{fmt}:" in r.stderr and "its windows before the damage are kept" in r.stderr
    cut = _detected(out / "cut.selections.txt")
    assert cut and max(end for _, end, _ in cut) <= 4.5  # about half of 8 s decoded
    assert _detected(out / "dusk.selections.txt")  # the next file went on
    r = predict(fitted_model, tmp_path / "in" / f"cut.{fmt}", "--top-k", "1", cwd=tmp_path)  # csv: the note
    rows = list(csv.DictReader(r.stdout.splitlines()))
    assert (rows[0]["level"] == "recording" and "truncated" in rows[0]["note"]) or "unreadable" in rows[0]["note"]
