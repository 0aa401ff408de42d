"""`python -m speciesclf.predict` as a user runs it: a tiny model trained here, a folder of good and bad files."""

from __future__ import annotations

import csv
import functools
import json
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np
import pytest
import soundfile as sf
import torch

from measure import peak_rss_mb
from speciesclf.data import audio
from speciesclf.features.store import FeatureStore
from speciesclf.models.saved import WeightsError, load_model
from speciesclf.predict import COLUMNS, Predictor, predict_file
from tiny import FREQS, SR, _train_tiny_model, tone

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train_tiny_model(tmp_path_factory.mktemp("predict"))


def test_a_time_expanded_model_reads_new_audio_slowed_and_gives_starts_in_recording_seconds(tmp_path: Path) -> None:
    model = _train_tiny_model(tmp_path, epochs=1, time_expansion=2.0)
    assert json.loads((model / "model.json").read_text())["features"]["time_expansion"] == 2.0
    sf.write(tmp_path / "new.wav", tone(SR, 1.5, FREQS["katydid"], 7), SR)
    proba, starts = Predictor(model).window_proba(tmp_path / "new.wav")
    assert starts == [0.0, 0.5, 1.0]  # 1.5 s slowed to 3 s: three 1 s windows, each 0.5 s of the recording
    assert proba.shape == (3, len(FREQS))


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "speciesclf.predict", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


# good files: name -> expected window start offsets (seconds)
GOOD = {"good.wav": [0.0], "good.flac": [0.0, 0.5], "long stereo 44k.wav": [0.0, 1.0, 2.0, 2.5]}
BAD = {"random.wav": "not_audio", "empty.wav": "empty", "missing.wav": "missing", "gone.wav": "broken_link"}


class Predicted(NamedTuple):
    folder: Path  # the input folder
    rows: dict[str, list[dict[str, str]]]  # CSV rows by file name
    run: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def predicted(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Predicted:
    base = tmp_path_factory.mktemp("inputs")
    folder = base / "new recordings"
    (folder / "site").mkdir(parents=True)
    sf.write(folder / "good.wav", tone(SR, 1.0, FREQS["cricket"], 100), SR)
    sf.write(folder / "site" / "good.flac", tone(SR, 1.5, FREQS["katydid"], 101), SR, format="FLAC")
    sf.write(folder / "long stereo 44k.wav", tone(44100, 3.5, FREQS["cicada"], 102, channels=2), 44100)
    (folder / "random.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (folder / "empty.wav").write_bytes(b"")
    (folder / "site" / "gone.wav").symlink_to(base / "deleted.wav")  # a link to nothing is reported, not dropped
    out = base / "out.csv"
    r = run_cli(model_dir, folder, base / "missing.wav", "--top-k", "2", "--out", out, cwd=base)
    assert r.returncode == 0, r.stderr
    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    with open(out, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        for row in reader:
            rows[Path(row["path"]).name].append(row)
    return Predicted(folder, rows, r)


def _probs(rows: list[dict[str, str]]) -> list[float]:
    return [float(r["probability"]) for r in rows]


@pytest.mark.parametrize("name", list(GOOD))
def test_recording_and_window_rows(model_dir: Path, predicted: Predicted, name: str) -> None:
    folder, rows = predicted.folder, predicted.rows
    species = set(FREQS)
    recording = [r for r in rows[name] if r["level"] == "recording"]
    assert [int(r["rank"]) for r in recording] == [1, 2]
    assert len({r["species"] for r in recording}) == 2 and {r["species"] for r in recording} <= species
    p = _probs(recording)
    assert p == sorted(p, reverse=True) and sum(p) <= 1 + 1e-6 and all(0 <= x <= 1 for x in p)
    by_window: dict[int, list[dict[str, str]]] = defaultdict(list)
    for r in rows[name]:
        if r["level"] == "window":
            by_window[int(r["window"])].append(r)
    assert sorted(by_window) == list(range(len(GOOD[name])))
    for w, wrows in by_window.items():
        assert [int(r["rank"]) for r in wrows] == [1, 2]
        assert {float(r["start_seconds"]) for r in wrows} == {GOOD[name][w]}
        p = _probs(wrows)
        assert p == sorted(p, reverse=True) and sum(p) <= 1 + 1e-6
    assert all(r["level"] in ("recording", "window") and not r["note"] for r in rows[name])
    # the recording's probabilities are the mean of its windows' (checked against the library, in process)
    path = next(folder.rglob(name))
    predictor = Predictor(model_dir)
    proba, starts = predictor.window_proba(path)
    assert starts == GOOD[name]
    assert proba.shape == (len(GOOD[name]), len(FREQS))
    mean = proba.mean(axis=0)
    for r in recording:
        assert float(r["probability"]) == pytest.approx(mean[predictor.species.index(r["species"])], abs=1e-5)


def test_detections_take_the_recording_rows_without_the_window_rows(model_dir: Path, predicted: Predicted) -> None:
    """Raven and Audacity tables write no window rows, so none are built; the recording's rows and the windows fed
    to the detector stay the same."""
    predictor, path = Predictor(model_dir), next(predicted.folder.rglob("long stereo 44k.wav"))

    def run(window_rows: bool) -> tuple[list[tuple], list[tuple[list[float], np.ndarray]]]:
        fed: list[tuple[list[float], np.ndarray]] = []
        detector = SimpleNamespace(add=lambda starts, proba: fed.append((starts, proba)))
        return predict_file(predictor, path, 2, detector=detector, window_rows=window_rows), fed  # type: ignore[arg-type]

    (rows, fed), (alone, fed_alone) = run(True), run(False)
    assert len(rows) == 2 + 2 * len(GOOD[path.name])
    assert alone == [r for r in rows if r[1] == "recording"] and len(alone) == 2
    assert [s for s, _ in fed_alone] == [s for s, _ in fed]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(fed_alone, fed, strict=True))


def test_bad_files_get_one_skipped_row_and_a_line_on_stderr(predicted: Predicted) -> None:
    rows, r = predicted.rows, predicted.run
    for name, reason in BAD.items():
        assert len(rows[name]) == 1, rows[name]
        row = rows[name][0]
        assert row["level"] == "skipped" and row["note"].startswith(f"{reason}:")
        assert row["species"] == row["probability"] == ""
        assert name in r.stderr
    assert "skipped" in r.stderr
    assert f"predicted {len(GOOD)} recording(s), skipped {len(BAD)}" in r.stderr
    assert set(rows) == set(GOOD) | set(BAD)  # nothing else listed, nothing lost


def test_predict_leaves_scikit_learn_unimported() -> None:
    """predict reads thresholds and never fits them: scikit-learn and SciPy would be ~110 MB of its peak memory."""
    code = (
        "import sys, speciesclf.predict; print(sorted({'sklearn', 'scipy'} & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_explains_the_arguments(tmp_path: Path) -> None:
    r = run_cli("--help", cwd=tmp_path)
    assert r.returncode == 0
    for word in ("model_dir", "inputs", "--top-k", "--out", "recursively"):
        assert word in r.stdout


def test_the_installed_console_command_predicts_as_the_module_does(model_dir: Path, predicted: Predicted) -> None:
    """`speciesclf predict` (pyproject's [project.scripts], installed beside this Python) writes the same CSV."""
    command = Path(sys.executable).parent / "speciesclf"
    assert command.is_file(), "the package is not installed with its console command (make install)"
    good = predicted.folder / "good.wav"
    ours = subprocess.run([command, "predict", model_dir, good], capture_output=True, text=True, timeout=120)
    theirs = run_cli(model_dir, good, cwd=predicted.folder)
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout and ours.stdout.count("cricket") >= 1
    usage = subprocess.run([command, "predict", "--help"], capture_output=True, text=True, timeout=60)
    assert usage.stdout.startswith("usage: speciesclf predict ")
    wrong = subprocess.run([command, "train"], capture_output=True, text=True, timeout=60)
    expected = "speciesclf: unknown command 'train'; expected one of predict, report, study\n"
    assert (wrong.returncode, wrong.stderr) == (2, expected)


def test_not_a_model_dir_exits_2_with_a_message(tmp_path: Path) -> None:
    wav = tmp_path / "x.wav"
    sf.write(wav, tone(SR, 1.0, 500.0, 0), SR)
    r = run_cli(tmp_path, wav, cwd=tmp_path)
    assert r.returncode == 2
    assert "not a model directory" in r.stderr and str(tmp_path) in r.stderr
    assert "Traceback" not in r.stderr


def _break_truncated_weights(d: Path) -> None:
    (d / "model.pt").write_bytes((d / "model.pt").read_bytes()[:1000])


def _break_weights_cut_midway(d: Path) -> None:
    """Cut where torch raises a bare OSError ("[Errno 22] Invalid argument", no file named), not RuntimeError."""
    weights = (d / "model.pt").read_bytes()
    for cut in range(512, len(weights), 512):
        (d / "model.pt").write_bytes(weights[:cut])
        try:
            torch.load(d / "model.pt", weights_only=True)
        except OSError:
            return
        except RuntimeError:
            continue
    raise AssertionError("no cut of model.pt makes torch.load raise OSError")


def _break_missing_weights(d: Path) -> None:
    (d / "model.pt").unlink()


def _break_empty_card(d: Path) -> None:
    (d / "model.json").write_text("")


def _break_card_not_a_mapping(d: Path) -> None:
    (d / "model.json").write_text("[]")


def _break_species_count(d: Path) -> None:
    card = json.loads((d / "model.json").read_text())
    card["species"].append("an extra species")
    (d / "model.json").write_text(json.dumps(card))


BROKEN = {
    _break_truncated_weights: "model.pt: unreadable, or not the weights model.json describes",
    _break_weights_cut_midway: "model.pt: unreadable, or not the weights model.json describes",
    _break_missing_weights: "model.pt: missing",
    _break_empty_card: "model.json: not valid JSON",
    _break_card_not_a_mapping: "model.json: not a model card (TypeError",
    _break_species_count: "model.pt: unreadable, or not the weights model.json describes",
}


@pytest.mark.parametrize("damage", list(BROKEN), ids=lambda f: f.__name__.removeprefix("_break_"))
def test_a_broken_model_dir_gives_one_line_naming_the_file(model_dir: Path, tmp_path: Path, damage: Any) -> None:
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    damage(broken)
    wav = tmp_path / "x.wav"
    sf.write(wav, tone(SR, 1.0, 500.0, 0), SR)
    r = run_cli(broken, wav, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"error: {broken}") and BROKEN[damage] in r.stderr, r.stderr


def test_out_pointing_at_a_folder_is_refused_before_any_work(model_dir: Path, tmp_path: Path) -> None:
    wav = tmp_path / "x.wav"
    sf.write(wav, tone(SR, 1.0, 500.0, 0), SR)
    r = run_cli(model_dir, wav, "--out", tmp_path, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"--out {tmp_path}: is a folder" in r.stderr


def test_an_empty_folder_is_reported_not_dropped(model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "nothing here").mkdir()
    wav = tmp_path / "x.wav"
    sf.write(wav, tone(SR, 1.0, 500.0, 0), SR)
    r = run_cli(model_dir, tmp_path / "nothing here", wav, cwd=tmp_path)
    assert r.returncode == 0
    assert f"skipped {tmp_path / 'nothing here'}: a folder with no files" in r.stderr
    assert "predicted 1 recording(s), skipped 1" in r.stderr


@pytest.mark.parametrize("front_end", ["logmel", "pcen"])
def test_a_model_on_another_front_end_predicts_with_the_front_end_of_its_card(tmp_path: Path, front_end: str) -> None:
    model_dir = _train_tiny_model(tmp_path, epochs=1, front_end=front_end, n_mels=32)
    predictor = Predictor(model_dir)
    assert (
        predictor.members[0].model.features.front_end == front_end and predictor.members[0].model.features.bands == 32
    )
    # a test recording's windows as the pipeline featurized them, scored by the network, against predict's scores
    x, _, recordings = FeatureStore(tmp_path / "features").load_split("test")
    with open(tmp_path / "features" / "test_windows.csv", newline="", encoding="utf-8") as f:
        first = next(csv.DictReader(f))
    rows = [i for i, r in enumerate(recordings) if r == first["recording_id"]]
    with torch.no_grad():
        expected = torch.softmax(predictor.members[0].model.network(torch.from_numpy(x[rows])).double(), dim=1).numpy()
    proba, _ = predictor.window_proba(tmp_path / "prepared" / first["path"])
    assert x.shape[1] == 32 and proba.shape == expected.shape
    np.testing.assert_allclose(proba, expected, atol=1e-6)


@pytest.mark.parametrize("damage", [_break_weights_cut_midway, _break_species_count], ids=["cut", "species"])
def test_load_model_names_model_pt_when_its_weights_are_unusable(model_dir: Path, tmp_path: Path, damage: Any) -> None:
    """evaluate, select and predict load through load_model: one error naming the file, never torch's bare one."""
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    damage(broken)
    with pytest.raises(WeightsError) as exc:
        load_model(broken)
    assert str(exc.value).startswith(f"{broken / 'model.pt'}: unreadable, or not the weights model.json describes (")


# -- streaming: hours of audio in bounded memory, the same scores as decoded whole (issue 27) ------------------------
def test_window_scores_streamed_in_blocks_equal_decoded_whole(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a rate that needs resampling, in blocks of 5,000 frames (many edges inside windows)."""
    sr = 22050
    sf.write(tmp_path / "field.flac", tone(sr, 9.3, FREQS["katydid"], 5, channels=2), sr, format="FLAC")
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 5000)
    predictor = Predictor(model_dir)
    proba, starts = predictor.window_proba(tmp_path / "field.flac")
    member = predictor.members[0]
    data, file_sr = audio.load_audio(tmp_path / "field.flac")
    whole = audio.resample(data.mean(axis=0), file_sr, SR)
    clip = member.config.clip_samples
    expected = member.proba(member.extract(audio.windows(whole, clip, clip)))
    assert starts == [s / SR for s in audio.window_starts(len(whole), clip, clip)]
    np.testing.assert_allclose(proba, expected, atol=1e-5)


def test_hop_overlaps_the_windows(model_dir: Path, tmp_path: Path) -> None:
    sf.write(tmp_path / "x.wav", tone(SR, 3.5, FREQS["cricket"], 3), SR)
    r = run_cli(
        model_dir, tmp_path / "x.wav", "--hop", "0.5", "--top-k", "1", "--out", tmp_path / "o.csv", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "o.csv", newline="", encoding="utf-8") as f:
        starts = [float(row["start_seconds"]) for row in csv.DictReader(f) if row["level"] == "window"]
    assert starts == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    for bad in ("0", "-1", "nan"):
        r = run_cli(model_dir, tmp_path / "x.wav", "--hop", bad, cwd=tmp_path)
        assert r.returncode == 2 and f"--hop {float(bad)}: expected seconds, more than 0" in r.stderr, r.stderr


@pytest.mark.parametrize("where", ["under a file", "proc"])
def test_out_that_cannot_be_written_is_one_line_before_any_work(model_dir: Path, tmp_path: Path, where: str) -> None:
    sf.write(tmp_path / "x.wav", tone(SR, 1.0, 500.0, 0), SR)
    (tmp_path / "a file").write_text("")
    out = tmp_path / "a file" / "o.csv" if where == "under a file" else Path("/proc/speciesclf/o.csv")
    r = run_cli(model_dir, tmp_path / "x.wav", "--out", out, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"error: --out {out}: cannot be written (") and "Traceback" not in r.stderr
    assert "predicted" not in r.stderr  # refused before the model was loaded or a file read


def test_out_naming_a_symlink_writes_where_it_points(model_dir: Path, tmp_path: Path) -> None:
    sf.write(tmp_path / "x.wav", tone(SR, 1.0, 500.0, 0), SR)
    (tmp_path / "results").mkdir()
    (tmp_path / "latest.csv").symlink_to(tmp_path / "results" / "today.csv")
    r = run_cli(model_dir, tmp_path / "x.wav", "--out", tmp_path / "latest.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "latest.csv").is_symlink()
    with open(tmp_path / "results" / "today.csv", newline="", encoding="utf-8") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS


def _write_long(path: Path, minutes: float, sr: int = 8000) -> Path:
    """A field-length recording written a minute at a time (a tone in noise at 8 kHz: predict resamples it)."""
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        for m in range(round(minutes)):
            f.write(tone(sr, 60.0, FREQS["cricket"], m) * 0.5)
    return path


@pytest.fixture(scope="module")
def long_recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("long")
    return {m: _write_long(base / f"{m}min.wav", m) for m in (10, 40)}


def _peak_rss_mb(model_dir: Path, wav: Path, out: Path) -> int:
    """predict in a process of its own: its peak resident memory."""
    args = [str(model_dir), str(wav), "--out", str(out)]
    code = f"from speciesclf.predict import main; assert main({args!r}) == 0"
    return peak_rss_mb(code, timeout=600)


def test_memory_does_not_grow_with_the_recording(model_dir: Path, long_recordings: dict[int, Path], tmp_path: Path):
    short, long = (_peak_rss_mb(model_dir, long_recordings[m], tmp_path / f"{m}.csv") for m in (10, 40))
    assert long < 1024 and long <= 1.1 * short, f"peak RSS {short} MB for 10 min, {long} MB for 40 min"
    with open(tmp_path / "40.csv", newline="", encoding="utf-8") as f:
        windows = {row["window"] for row in csv.DictReader(f) if row["level"] == "window"}
    assert len(windows) == 40 * 60  # 1 s windows, one clip apart: every second of the recording scored


def test_ctrl_c_is_interrupted_130_and_leaves_nothing(
    model_dir: Path, long_recordings: dict[int, Path], tmp_path: Path
) -> None:
    out = tmp_path / "o.csv"
    cmd = [sys.executable, "-m", "speciesclf.predict", str(model_dir), str(long_recordings[40]), "--out", str(out)]
    # a shell's background job (CI's, say) inherits SIGINT ignored, and Python then keeps it ignored
    reset = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=reset
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".o.csv.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the recording's windows
    assert proc.poll() is None, "predict ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and stderr.rstrip().endswith("interrupted"), stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no table, no temporary file
