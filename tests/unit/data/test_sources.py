"""User collections through `prepare`: every libsndfile flavour, every bad-file reason, the folder and CSV sources,
and grouped (leak-free) splits. Real files written to tmp_path; no DVC.
"""

from __future__ import annotations

import copy
import csv
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml

from speciesclf.data.audio import AudioError, load_mono, window_starts
from speciesclf.data.manifest import SPLITS, Clip, assign_splits, read_manifest
from speciesclf.data.prepare import prepare
from speciesclf.data.sources import check_file, collect_csv, collect_folder
from speciesclf.features.config import FeatureConfig
from speciesclf.features.store import featurize
from speciesclf.params import validate

ROOT = Path(__file__).resolve().parents[3]
SR = 16000
FREQS = {"alpha": 440.0, "beta": 880.0, "gamma": 1320.0, "delta": 1760.0}
ODD_NAME = "Grünspecht – Köln #3 %20 café ß.wav"  # spaces, '#', a literal '%20', non-ASCII letters


def base_params(path: Path, **data: Any) -> dict[str, Any]:
    params = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")))
    params["data"].update({"source": "folder", "path": str(path), "csv": None, **data})
    params["features"].update(sample_rate=SR, clip_seconds=1.0, train_hop_seconds=0.5)
    return validate(params)


def feature_config(path: Path) -> FeatureConfig:
    """The FeatureConfig of the params (training hop 0.5 s)."""
    config = FeatureConfig(**base_params(path)["features"])
    assert config.train_hop_seconds == 0.5
    return config


def tone(sr: int, seconds: float, freq: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    rng = np.random.default_rng(seed)
    mono = 0.4 * np.sin(2 * np.pi * freq * t + rng.uniform(0, np.pi)) + 0.01 * rng.standard_normal(t.size)
    mono = mono.astype(np.float32)
    return np.stack([mono, 0.5 * mono], axis=1) if channels == 2 else mono


def write_tone(
    path: Path, label: str, *, sr: int = SR, seconds: float = 1.0, channels: int = 1, seed: int = 0, **kw: Any
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(sr, seconds, FREQS.get(label, 600.0), channels, seed), sr, **kw)


# -- the folder matrix ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    rel: str  # path inside the collection
    reason: str = ""  # "" = used
    seconds: float = 1.0
    write: dict[str, Any] | None = None  # soundfile.write keywords (format, subtype) plus sr/seconds/channels


GOOD = [
    Case("alpha/pcm_u8.wav", write={"subtype": "PCM_U8"}),
    Case("alpha/pcm_16.wav", write={"subtype": "PCM_16"}),
    Case("alpha/pcm_24.wav", write={"subtype": "PCM_24"}),
    Case("alpha/pcm_32.wav", write={"subtype": "PCM_32"}),
    Case(f"alpha/{ODD_NAME}", write={"subtype": "PCM_16"}),
    Case("beta/float.wav", write={"subtype": "FLOAT"}),
    Case("beta/alaw.wav", write={"subtype": "ALAW"}),
    Case("beta/ulaw.wav", write={"subtype": "ULAW"}),
    Case("beta/lossless.flac", write={"format": "FLAC", "subtype": "PCM_16"}),
    Case("gamma/vorbis.ogg", write={"format": "OGG", "subtype": "VORBIS"}),
    Case("gamma/layer3.mp3", write={"format": "MP3", "subtype": "MPEG_LAYER_III"}),
    Case("gamma/stereo.wav", write={"subtype": "PCM_16", "channels": 2}),
    Case("gamma/site 1/2024-05-01/nested.flac", write={"format": "FLAC"}),  # deeper nesting is allowed
    Case("delta/rate_8k.wav", write={"sr": 8000}),
    Case("delta/rate_48k.flac", write={"format": "FLAC", "sr": 48000}),
    Case("delta/short.wav", seconds=0.2, write={"seconds": 0.2}),
    Case("delta/long.flac", seconds=40.0, write={"format": "FLAC", "seconds": 40.0}),
]
BAD = [
    Case("alpha/empty.wav", "empty"),
    Case("beta/random_bytes.wav", "not_audio"),
    Case("gamma/zero_frames.wav", "zero_length"),
    Case("delta/nan.wav", "non_finite"),
    Case("alpha/silent.wav", "silent"),
    Case("at_root.wav", "no_label"),
    Case("rare/one.wav", "too_few_recordings"),
    Case("rare/two.wav", "too_few_recordings"),
    Case(".DS_Store", "hidden"),
]
CASES = {c.rel: c for c in GOOD + BAD}


def write_case(root: Path, case: Case, seed: int) -> bool:
    """Write one file of the matrix; False when this libsndfile build cannot write it."""
    path = root / case.rel
    path.parent.mkdir(parents=True, exist_ok=True)
    label = case.rel.split("/")[0]
    if case.write is not None:
        kw = dict(case.write)
        sr, seconds, channels = kw.pop("sr", SR), kw.pop("seconds", 1.0), kw.pop("channels", 1)
        try:
            write_tone(path, label, sr=sr, seconds=seconds, channels=channels, seed=seed, **kw)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
            path.unlink(missing_ok=True)
            return False
        return True
    if case.reason == "empty":
        path.write_bytes(b"")
    elif case.reason == "not_audio":
        path.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif case.reason == "zero_length":
        sf.write(path, np.zeros((0, 1), np.float32), SR, subtype="PCM_16")
    elif case.reason == "non_finite":
        wave = tone(SR, 1.0, 600.0)
        wave[100:110] = np.nan
        sf.write(path, wave, SR, subtype="FLOAT")
    elif case.reason == "silent":
        sf.write(path, np.zeros(SR, np.float32), SR, subtype="PCM_16")
    elif case.reason == "hidden":
        path.write_bytes(b"\x00\x01 finder metadata")
    else:  # no_label, too_few_recordings: perfectly good audio in the wrong place / of a too-rare species
        write_tone(path, label, seed=seed)
    return True


@dataclass
class Prepared:
    root: Path
    out: Path
    report: dict[str, Any]
    unwritable: set[str]

    @property
    def by_path(self) -> dict[str, dict[str, Any]]:
        return {e["path"]: e for e in self.report["files"]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    root = tmp_path_factory.mktemp("collection")
    unwritable = {c.rel for seed, c in enumerate(CASES.values()) if not write_case(root, c, seed)}
    out = tmp_path_factory.mktemp("prepared") / "prepared"
    report = prepare(base_params(root), out)
    return Prepared(root, out, report, unwritable)


def _expected_windows(seconds: float, split: str) -> int:
    hop = 0.5 if split == "train" else 1.0
    return len(window_starts(round(seconds * SR), SR, round(hop * SR)))


@pytest.mark.parametrize("rel", [c.rel for c in GOOD])
def test_every_good_file_is_used_with_its_split_and_windows(folder: Prepared, rel: str) -> None:
    if rel in folder.unwritable:
        pytest.skip(f"this libsndfile build cannot write {rel} ({CASES[rel].write})")
    case, entry = CASES[rel], folder.by_path[rel]
    assert entry["status"] == "used", entry
    assert entry["label"] == rel.split("/")[0]
    assert entry["split"] in SPLITS
    tolerance = 0.1 if rel.endswith(".mp3") else 1e-3  # MP3 decoders add encoder delay/padding
    assert entry["seconds"] == pytest.approx(case.seconds, abs=tolerance)
    assert entry["windows"] == _expected_windows(entry["seconds"], entry["split"])
    # the manifest path (relative to the prepared folder) resolves to this very file, and decodes
    row = next(c for c in read_manifest(folder.out / "manifest.csv") if c.recording_id == rel)
    resolved = (folder.out / row.path).resolve()
    assert resolved == (folder.root / rel).resolve()
    assert (row.label, row.split) == (entry["label"], entry["split"])
    wave = load_mono(resolved, SR)
    assert wave.ndim == 1 and np.isfinite(wave).all()
    assert len(wave) == pytest.approx(case.seconds * SR, abs=tolerance * SR + 1)


@pytest.mark.parametrize("rel", [c.rel for c in BAD])
def test_every_bad_file_is_skipped_with_its_reason(folder: Prepared, rel: str) -> None:
    entry = folder.by_path[rel]
    assert entry["status"] == "skipped"
    assert entry["reason"] == CASES[rel].reason, entry
    assert entry.get("detail"), "a skipped file says why in words too"
    assert all(c.recording_id != rel for c in read_manifest(folder.out / "manifest.csv"))


def test_every_file_is_accounted_for_exactly_once(folder: Prepared) -> None:
    on_disk = sorted(p.relative_to(folder.root).as_posix() for p in folder.root.rglob("*") if p.is_file())
    listed = [e["path"] for e in folder.report["files"]]
    assert sorted(listed) == on_disk  # each file once, none invented
    rep = folder.report
    assert rep["n_files"] == len(on_disk) == rep["n_used"] + rep["n_skipped"]
    used = [e for e in rep["files"] if e["status"] == "used"]
    assert rep["n_used"] == len(used) == len(read_manifest(folder.out / "manifest.csv"))
    assert rep["skipped"] == {r: sum(c.reason == r for c in BAD) for r in {c.reason for c in BAD}}
    assert rep["n_species"] == len(FREQS)
    assert rep["splits"] == {s: sum(e["split"] == s for e in used) for s in SPLITS}
    assert (folder.out / "report.json").is_file()


def test_long_recording_gets_every_window(folder: Prepared) -> None:
    entry = folder.by_path["delta/long.flac"]
    # 40 s: train windows of 1 s every 0.5 s (79); val/test one per second (40)
    expected = {"train": 79, "val": 40, "test": 40}[entry["split"]]
    assert entry["windows"] == expected == _expected_windows(40.0, entry["split"])
    assert folder.by_path["delta/short.wav"]["windows"] == 1  # padded to one window


def test_long_recording_windows_in_train_and_in_val(tmp_path: Path) -> None:
    """Given splits put one 40 s recording in train (hop 0.5 s) and one in val (hop = clip), whatever the seed."""
    root = tmp_path / "long"
    rows = [("train.flac", "x", "train"), ("val.flac", "x", "val"), ("test.wav", "x", "test")]
    for seed, (rel, _, split) in enumerate(rows):
        write_tone(root / rel, "x", seconds=40.0 if split != "test" else 2.5, seed=seed)
    # a second species (a classifier needs two), one clip-long recording per split: one window each
    others = [(f"y_{split}.wav", "y", split) for split in ("train", "val", "test")]
    for seed, (rel, _, _) in enumerate(others, start=3):
        write_tone(root / rel, "y", seconds=1.0, seed=seed)
    write_csv(root / "l.csv", rows + others, ("path", "label", "split"))
    out = tmp_path / "prepared"
    report = prepare(base_params(root, source="csv", csv="l.csv"), out)
    windows = {e["path"]: e["windows"] for e in report["files"]}
    assert windows == {
        "train.flac": 79,
        "val.flac": 40,
        "test.wav": 3,
        "y_train.wav": 1,
        "y_val.wav": 1,
        "y_test.wav": 1,
    }
    assert windows["train.flac"] == len(window_starts(40 * SR, SR, SR // 2))
    counts = featurize(out / "manifest.csv", tmp_path / "features", feature_config(root))
    assert counts == {"train": 80, "val": 41, "test": 4}


@pytest.mark.parametrize("time_expansion", [1.0, 2.5])
def test_reported_windows_match_featurize_for_odd_lengths_and_rates(tmp_path: Path, time_expansion: float) -> None:
    """Resampling rounds the length up: one sample past a window boundary is one more window, in both places;
    time expansion lengthens every recording in both places alike."""
    root = tmp_path / "odd"
    root.mkdir()
    rows, n = [], 0
    for sr, frames in [
        (44100, 44101),
        (48000, 48001),
        (22050, 22051),
        (8000, 8001),
        (44100, 3 * 44100 + 7),
        (44100, 44099),
        (11025, 11025 * 2 + 1),
        (16000, 16001),
    ]:
        for split in ("train", "val", "test"):
            rel = f"{split}_{sr}_{frames}.wav"
            wave = tone(sr, frames / sr, 500.0, seed=n)[:frames]
            sf.write(root / rel, wave, sr, subtype="FLOAT")
            rows.append((rel, "x" if len(rows) < 12 else "y", split))  # two species, each in every split
            n += 1
    write_csv(root / "l.csv", rows, ("path", "label", "split"))
    out = tmp_path / "prepared"
    params = base_params(root, source="csv", csv="l.csv")
    params["features"]["time_expansion"] = time_expansion
    report = prepare(validate(params), out)
    reported: dict[str, int] = defaultdict(int)
    for e in report["files"]:
        reported[e["split"]] += e["windows"]
    counts = featurize(out / "manifest.csv", tmp_path / "features", FeatureConfig(**params["features"]))
    assert counts == dict(reported)
    if time_expansion == 2.5:  # 3 s and 7 samples at 44.1 kHz, slowed: just over 7.5 s, so 14 training windows of
        # 1 s at a hop of 0.5 s, and one more aligned to the end for the tail
        assert next(e["windows"] for e in report["files"] if e["path"] == "train_44100_132307.wav") == 15


def test_featurize_gives_the_reported_windows_per_split(folder: Prepared, tmp_path: Path) -> None:
    counts = featurize(folder.out / "manifest.csv", tmp_path / "features", feature_config(folder.root))
    reported: dict[str, int] = defaultdict(int)
    for e in folder.report["files"]:
        if e["status"] == "used":
            reported[e["split"]] += e["windows"]
    assert counts == {s: reported[s] for s in SPLITS}
    x = np.load(tmp_path / "features" / "train_x.npy")
    assert x.shape[0] == counts["train"] and np.isfinite(x).all()


def test_featurize_bytes_do_not_depend_on_the_number_of_workers(folder: Prepared, tmp_path: Path) -> None:
    """Decoding spread over processes gives the same bytes as one process (so dvc.lock is unchanged)."""
    config = feature_config(folder.root)
    for workers in (1, 2):
        featurize(folder.out / "manifest.csv", tmp_path / f"w{workers}", config, workers=workers)
    files = sorted(p.name for p in (tmp_path / "w1").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "w2").iterdir()) and "train_x.npy" in files
    for name in files:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name


def test_on_error_fail_names_the_first_bad_file(folder: Prepared, tmp_path: Path) -> None:
    labelled = sorted(Path(c).as_posix() for c in CASES if "/" in c and not c.startswith("."))
    first_bad = next(c for c in labelled if CASES[c].reason and CASES[c].reason != "too_few_recordings")
    out = tmp_path / "prepared"
    with pytest.raises(ValueError, match=r"data\.on_error is 'fail'") as err:
        prepare(base_params(folder.root, on_error="fail"), out)
    assert str(folder.root / first_bad) in str(err.value)
    assert CASES[first_bad].reason in str(err.value)
    assert not out.exists() and not list(tmp_path.iterdir()), "a failed prepare leaves nothing behind"


def test_nothing_usable_is_one_clear_line(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    for seed, case in enumerate(BAD):
        write_case(root, case, seed)
    with pytest.raises(ValueError, match="no usable recordings") as err:
        prepare(base_params(root), tmp_path / "prepared")
    message = str(err.value)
    assert "\n" not in message and str(root) in message
    # the line says why, without relying on output printed elsewhere
    for reason in ("empty", "not_audio", "too_few_recordings"):
        assert reason in message
    assert not (tmp_path / "prepared").exists()


def test_missing_or_empty_collection(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a folder"):
        prepare(base_params(tmp_path / "nowhere"), tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no usable recordings"):
        prepare(base_params(tmp_path / "empty"), tmp_path / "out")


def test_collect_folder_labels_by_first_level(tmp_path: Path) -> None:
    write_tone(tmp_path / "sp" / "a" / "b" / "x.wav", "sp")
    write_tone(tmp_path / "loose.wav", "sp")
    clips, unlabelled = collect_folder(tmp_path)
    assert clips == [Clip("sp/a/b/x.wav", "sp", "sp/a/b/x.wav")]
    assert [u["reason"] for u in unlabelled] == ["no_label"]
    assert check_file(tmp_path / "missing.wav").reason == "missing"


# -- the CSV source ------------------------------------------------------------------------------------------
CSV_ROWS = [  # path, label, split, recording_id
    ("audio/alpha/a1.wav", "alpha", "train", "A1"),
    ("audio/alpha/a1_part2.wav", "alpha", "train", "A1"),  # a second clip of recording A1
    ("audio/alpha/a2.flac", "alpha", "train", "A2"),
    ("audio/alpha/a3.wav", "alpha", "validation", "A3"),
    ("audio/alpha/a4.wav", "alpha", "test", "A4"),
    ("audio/alpha/a4_part2.wav", "alpha", "test", "A4"),
    ("audio/beta/b 1 #1.wav", "beta", "train", ""),  # no recording_id: the file is its own recording
    ("audio/beta/b2.wav", "beta", "Train", ""),
    ("audio/beta/b3.ogg", "beta", "val", ""),
    ("audio/beta/b4.wav", "beta", "TEST", ""),
    ("audio/beta/b5.wav", "beta", "", ""),  # empty split in a CSV that has splits
    ("audio/gamma/g1.wav", "gamma", "test", ""),  # gamma never appears in train
    ("audio/beta/broken.wav", "beta", "train", ""),  # random bytes
    ("audio/beta/gone.wav", "beta", "train", ""),  # listed, not on disk
]
CSV_EXPECTED_SKIPS = {
    "audio/beta/b5.wav": "no_split",
    "audio/gamma/g1.wav": "label_not_in_train",
    "audio/beta/broken.wav": "not_audio",
    "audio/beta/gone.wav": "missing",
}


def write_csv(path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture()
def csv_collection(tmp_path: Path) -> Path:
    root = tmp_path / "csvcoll"
    for seed, (rel, label, _, _) in enumerate(CSV_ROWS):
        if rel.endswith("broken.wav"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(os.urandom(2048))
        elif not rel.endswith("gone.wav"):
            fmt = {".flac": "FLAC", ".ogg": "OGG"}.get(Path(rel).suffix, "WAV")
            write_tone(root / rel, label, seed=seed, format=fmt)
    write_csv(root / "labels.csv", CSV_ROWS, ("path", "label", "split", "recording_id"))
    return root


def test_csv_splits_are_honoured_and_every_row_reported(csv_collection: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    report = prepare(base_params(csv_collection, source="csv", csv="labels.csv"), out)
    by_path = {e["path"]: e for e in report["files"]}
    assert sorted(by_path) == sorted(r[0] for r in CSV_ROWS) and report["n_files"] == len(CSV_ROWS)
    assert report["n_files"] == report["n_used"] + report["n_skipped"]
    for rel, reason in CSV_EXPECTED_SKIPS.items():
        assert by_path[rel]["status"] == "skipped" and by_path[rel]["reason"] == reason, by_path[rel]
    given = {"train": "train", "validation": "val", "val": "val", "test": "test"}
    manifest = {(out / c.path).resolve(): c for c in read_manifest(out / "manifest.csv")}
    used = [r for r in CSV_ROWS if r[0] not in CSV_EXPECTED_SKIPS]
    assert len(manifest) == len(used) == report["n_used"]
    for rel, label, split, rec in used:
        clip = manifest[(csv_collection / rel).resolve()]  # manifest paths resolve to the CSV's files
        assert clip.label == label and clip.split == given[split.lower()]
        assert clip.recording_id == (rec or rel)
        assert by_path[rel]["split"] == clip.split
    splits_of: dict[str, set[str]] = defaultdict(set)
    for c in manifest.values():
        splits_of[c.recording_id].add(c.split)
    assert splits_of["A1"] == {"train"} and splits_of["A4"] == {"test"}
    assert by_path["audio/alpha/a1.wav"]["windows"] == 1  # a 1 s recording is exactly one 1 s window


def test_collect_csv_normalises_splits(tmp_path: Path) -> None:
    rows = [("a.wav", "x", "validation", ""), ("b.wav", "x", "", "r"), ("c.wav", "x", " Test ", "r")]
    write_csv(tmp_path / "l.csv", rows, ("path", "label", "split", "recording_id"))
    clips, _ = collect_csv(tmp_path / "l.csv")
    assert [c.split for c in clips] == ["val", "?", "test"]
    assert [c.recording_id for c in clips] == ["a.wav", "r", "r"]
    write_csv(tmp_path / "nosplit.csv", [("a.wav", "x")], ("path", "label"))
    assert collect_csv(tmp_path / "nosplit.csv")[0][0].split == ""  # no split column: prepare assigns one
    write_csv(tmp_path / "bad.csv", [("a.wav", "x", "holdout")], ("path", "label", "split"))
    with pytest.raises(ValueError, match="holdout"):
        collect_csv(tmp_path / "bad.csv")
    write_csv(tmp_path / "cols.csv", [("a.wav",)], ("file",))
    with pytest.raises(ValueError, match="missing column"):
        collect_csv(tmp_path / "cols.csv")


# -- grouped splits: no recording in two splits --------------------------------------------------------------
def _grouped_collection(root: Path, n_species: int = 3, n_recordings: int = 6, clips_per: int = 4) -> None:
    rows = []
    labels = list(FREQS)[:n_species]
    for s, label in enumerate(labels):
        for r in range(n_recordings):
            for k in range(clips_per):
                rel = f"clips/{label}_{r}_{k}.wav"
                write_tone(root / rel, label, seconds=0.25, seed=1000 * s + 10 * r + k, subtype="PCM_16")
                rows.append((rel, label, f"{label}-rec{r}"))
    write_csv(root / "clips.csv", rows, ("path", "label", "recording_id"))


def _splits_by_recording(out: Path) -> dict[str, set[str]]:
    by_rec: dict[str, set[str]] = defaultdict(set)
    for c in read_manifest(out / "manifest.csv"):
        by_rec[c.recording_id].add(c.split)
    return by_rec


def test_prepare_keeps_each_recording_in_one_split(tmp_path: Path) -> None:
    root = tmp_path / "grouped"
    _grouped_collection(root)

    def run(seed: int, name: str) -> Path:
        params = base_params(root, source="csv", csv="clips.csv")
        params["split"]["seed"] = seed
        prepare(params, tmp_path / name)
        return tmp_path / name

    a, b, c = run(7, "a"), run(7, "b"), run(8, "c")
    by_rec = _splits_by_recording(a)
    assert len(by_rec) == 3 * 6
    assert all(len(s) == 1 for s in by_rec.values()), "a recording lends clips to two splits"
    for label in list(FREQS)[:3]:
        assert {next(iter(s)) for r, s in by_rec.items() if r.startswith(label)} == set(SPLITS)
    assert (a / "manifest.csv").read_bytes() == (b / "manifest.csv").read_bytes()
    assert (a / "report.json").read_bytes() == (b / "report.json").read_bytes()
    assert _splits_by_recording(c) != by_rec, "another split.seed gives another assignment"


@pytest.mark.parametrize("seed", range(5))
def test_assign_splits_is_grouped_and_stratified(seed: int) -> None:
    rng = np.random.default_rng(seed)
    clips = [
        Clip(f"{sp}/{r}/{k}.wav", f"sp{sp}", f"sp{sp}-r{r}")
        for sp in range(12)
        for r in range(int(rng.integers(3, 15)))
        for k in range(int(rng.integers(1, 6)))
    ]
    rng.shuffle(clips)
    out = assign_splits(clips, 0.15, 0.15, seed)
    assert [c.path for c in out] == [c.path for c in clips]  # order kept, one split each
    by_rec: dict[str, set[str]] = defaultdict(set)
    by_species: dict[str, set[str]] = defaultdict(set)
    for c in out:
        by_rec[c.recording_id].add(c.split)
        by_species[c.label].add(c.split)
    assert all(len(s) == 1 for s in by_rec.values())
    assert all(s == set(SPLITS) for s in by_species.values())
    assert assign_splits(clips, 0.15, 0.15, seed) == out
    given = [Clip("g.wav", "sp0", "given", "test"), *clips]
    assert assign_splits(given, 0.15, 0.15, seed)[0].split == "test"  # a given split is kept


def test_csv_recording_split_across_splits_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("path,label,split,recording_id\na.wav,x,train,r1\nb.wav,x,test,r1\n")
    with pytest.raises(ValueError, match="'r1' is given splits train and test"):
        collect_csv(tmp_path / "labels.csv")


def test_a_file_broken_after_prepare_stops_featurize_with_one_line(tmp_path: Path) -> None:
    """A decode error inside a featurize worker process reaches the user as the file's one-line error.

    The case: a file changes after `prepare` (a CSV may point outside data.path, which DVC does not watch).
    AudioError is pickled from the worker to the parent; it must keep its path and reason on the way.
    """
    root = tmp_path / "collection"
    for label in FREQS:
        for r in range(4):
            write_tone(root / label / f"r{r}.wav", label, seed=r)
    params = base_params(root)
    prepare(params, tmp_path / "prepared")
    broken = root / "beta" / "r1.wav"
    broken.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioError) as exc:  # 16 recordings over 2 worker processes
        featurize(tmp_path / "prepared" / "manifest.csv", tmp_path / "features", feature_config(root), workers=2)
    assert exc.value.reason == "not_audio" and Path(exc.value.path).resolve() == broken.resolve()
    # the stage: one line, no traceback, exit 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    cmd = [sys.executable, str(ROOT / "stages/featurize.py"), "prepared", "features"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and "beta/r1.wav: not_audio" in r.stderr


# -- one file, one row: label conflicts and duplicate rows (issue 12) ----------------------------------------
def _small_csv_collection(root: Path) -> list[tuple[str, str]]:
    rows = []
    for label in ("alpha", "beta", "gamma"):
        for r in range(4):
            write_tone(root / label / f"rec{r}.wav", label, seed=r)
            rows.append((f"{label}/rec{r}.wav", label))
    return rows


def test_a_file_under_two_labels_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    rows = _small_csv_collection(tmp_path)
    write_csv(tmp_path / "l.csv", [*rows, ("alpha/rec0.wav", "beta")], ("path", "label"))
    params = base_params(tmp_path, source="csv", csv="l.csv")
    params["split"]["seed"] = 2  # the seed that put the file in train as alpha and in test as beta
    with pytest.raises(ValueError) as exc:
        prepare(params, tmp_path / "prepared")
    assert str(exc.value) == (
        f"{tmp_path / 'l.csv'}: lines 2 and 14 list 'alpha/rec0.wav' as 'alpha' and as 'beta'; "
        "a file has one species, one split and one recording"
    )
    assert not (tmp_path / "prepared").exists()


def test_duplicate_rows_are_used_once_and_reported(tmp_path: Path) -> None:
    rows = _small_csv_collection(tmp_path)
    write_csv(
        tmp_path / "l.csv", [*rows, ("alpha/rec0.wav", "alpha"), ("./alpha//rec0.wav", "alpha")], ("path", "label")
    )
    report = prepare(base_params(tmp_path, source="csv", csv="l.csv"), tmp_path / "prepared")
    assert (report["n_files"], report["n_used"], report["skipped"]) == (14, 12, {"duplicate": 2})
    dups = [e for e in report["files"] if e.get("reason") == "duplicate"]
    assert [e["detail"] for e in dups] == [
        "repeats line 2 of l.csv (line 15); the file is used once",
        "repeats line 2 of l.csv (line 14); the file is used once",
    ]
    manifest = read_manifest(tmp_path / "prepared" / "manifest.csv")
    assert len(manifest) == 12 and len({c.path for c in manifest}) == 12


def test_a_csv_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_bytes("path,label\nalpha/x.wav,Gr\xfcnspecht\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"l\.csv: not UTF-8 text \(invalid start byte at byte \d+\)"):
        collect_csv(tmp_path / "l.csv")


def test_prepare_refuses_a_split_without_recordings(tmp_path: Path) -> None:
    rows = [
        (p, label, "train" if p.endswith(("0.wav", "1.wav")) else "test")
        for p, label in _small_csv_collection(tmp_path)
    ]
    write_csv(tmp_path / "l.csv", rows, ("path", "label", "split"))
    with pytest.raises(ValueError, match=r"no usable recording in the val split \(6 test, 6 train\)"):
        prepare(base_params(tmp_path, source="csv", csv="l.csv"), tmp_path / "prepared")


def test_prepare_refuses_a_single_species(tmp_path: Path) -> None:
    for r in range(4):
        write_tone(tmp_path / "alpha" / f"rec{r}.wav", "alpha", seed=r)
    with pytest.raises(ValueError, match=r"only one usable species \('alpha'\); a classifier needs at least two"):
        prepare(base_params(tmp_path), tmp_path / "prepared")


# -- symbolic links in a folder collection (issue: a broken or looping link failed `dvc status` unexplained) --------
def _linked_collection(tmp_path: Path) -> Path:
    """Two species as files, a third as a link to a folder elsewhere, and every kind of link inside."""
    root, elsewhere = tmp_path / "collection", tmp_path / "elsewhere"
    for label in ("alpha", "beta", "gamma"):
        for r in range(4):
            write_tone((elsewhere if label == "gamma" else root) / label / f"r{r}.wav", label, seed=r)
    write_tone(elsewhere / "single.wav", "alpha", seed=9)
    os.symlink(elsewhere / "gamma", root / "gamma")  # a species folder kept on another disk: followed
    os.symlink(elsewhere / "single.wav", root / "alpha" / "linked.wav")  # a link to a file: used
    os.symlink(tmp_path / "deleted.wav", root / "beta" / "gone.wav")  # broken_link
    os.symlink("loop.wav", root / "beta" / "loop.wav")  # link_loop: the link leads to itself
    os.symlink("..", root / "alpha" / "up")  # link_loop: a folder link to a folder above it
    os.symlink("../alpha/r0.wav", root / "beta" / "same.wav")  # the same file twice: duplicate
    return root


LINK_SKIPS = {
    "alpha/up": "link_loop",
    "beta/gone.wav": "broken_link",
    "beta/loop.wav": "link_loop",
    "beta/same.wav": "duplicate",
}


def test_collect_folder_follows_links_and_keeps_problem_links(tmp_path: Path) -> None:
    root = _linked_collection(tmp_path)
    clips, unlabelled = collect_folder(root)
    assert [c.path for c in clips] == [
        *(f"alpha/{n}" for n in ("linked.wav", "r0.wav", "r1.wav", "r2.wav", "r3.wav")),
        *(f"beta/{n}" for n in ("gone.wav", "loop.wav", "r0.wav", "r1.wav", "r2.wav", "r3.wav")),
        *(f"gamma/r{r}.wav" for r in range(4)),
    ]
    assert all(c.label == c.path.split("/")[0] and c.recording_id == c.path for c in clips)
    assert sorted(unlabelled, key=lambda u: u["path"]) == [
        {
            "path": "alpha/up",
            "reason": "link_loop",
            "detail": f"a symbolic link to {root.resolve()}, a folder that contains it; its files are listed once",
        },
        {
            "path": "beta/same.wav",
            "label": "beta",
            "reason": "duplicate",
            "detail": "the same file as alpha/r0.wav (through a symbolic link); each file is used once",
        },
    ]


def test_problem_links_are_reported_and_good_links_used(tmp_path: Path) -> None:
    root = _linked_collection(tmp_path)
    out = tmp_path / "prepared"
    report = prepare(base_params(root), out)
    by_path = {e["path"]: e for e in report["files"]}
    assert (report["n_files"], report["n_used"]) == (17, 13)
    assert report["skipped"] == {"broken_link": 1, "duplicate": 1, "link_loop": 2}
    assert {p: e["reason"] for p, e in by_path.items() if e["status"] == "skipped"} == LINK_SKIPS
    assert by_path["beta/gone.wav"]["detail"] == f"a symbolic link to {tmp_path / 'deleted.wav'}, which does not exist"
    assert by_path["beta/loop.wav"]["detail"] == "a symbolic link that leads back to itself"
    # the linked file and the linked species folder are used, and the manifest reaches the real files
    assert by_path["alpha/linked.wav"]["status"] == by_path["gamma/r0.wav"]["status"] == "used"
    reached = {(out / c.path).resolve() for c in read_manifest(out / "manifest.csv")}
    assert tmp_path / "elsewhere" / "single.wav" in reached and tmp_path / "elsewhere" / "gamma" / "r3.wav" in reached
    assert report["n_species"] == 3


def test_a_broken_link_under_on_error_fail_is_one_line(tmp_path: Path) -> None:
    root = _linked_collection(tmp_path / "data")
    params = base_params(root, on_error="fail")
    with pytest.raises(ValueError) as err:
        prepare(params, tmp_path / "prepared")
    assert str(err.value) == (
        f"{root / 'beta' / 'gone.wav'}: broken_link (a symbolic link to {tmp_path / 'data' / 'deleted.wav'}, "
        "which does not exist); data.on_error is 'fail'"
    )
    assert not (tmp_path / "prepared").exists()
    # the stage: that line, no traceback, exit 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    cmd = [sys.executable, str(ROOT / "stages/prepare.py"), "prepared"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr == f"error: {err.value}\n", r.stderr


def test_a_broken_link_in_a_csv_is_named(tmp_path: Path) -> None:
    rows = _small_csv_collection(tmp_path)
    os.symlink("rec9.wav", tmp_path / "alpha" / "link.wav")
    write_csv(tmp_path / "l.csv", [*rows, ("alpha/link.wav", "alpha")], ("path", "label"))
    report = prepare(base_params(tmp_path, source="csv", csv="l.csv"), tmp_path / "prepared")
    assert report["skipped"] == {"broken_link": 1}
    assert next(e for e in report["files"] if e["path"] == "alpha/link.wav")["reason"] == "broken_link"


# -- near-silent recordings (issue: 1e-30 amplitude, DC, one sample gave windows with every MFCC at the floor) ------
def test_near_silent_files_are_skipped_as_silent(tmp_path: Path) -> None:
    for label in ("alpha", "beta"):
        for r in range(4):
            write_tone(tmp_path / label / f"r{r}.wav", label, seed=r)
    sf.write(tmp_path / "alpha" / "tiny.wav", np.resize(np.float32([1e-30, -1e-30]), SR), SR, subtype="FLOAT")
    sf.write(tmp_path / "alpha" / "dc.flac", np.full(SR, 0.3, np.float32), SR, format="FLAC")
    sf.write(tmp_path / "beta" / "one_sample.wav", np.float32([0.5]), SR, subtype="PCM_16")
    quiet = tone(SR, 1.0, FREQS["beta"]) * np.float32(1e-3 / 0.41)  # about -60 dBFS: faint, but a real call
    sf.write(tmp_path / "beta" / "quiet.wav", quiet, SR, subtype="PCM_16")
    report = prepare(base_params(tmp_path), tmp_path / "prepared")
    by_path = {e["path"]: e for e in report["files"]}
    assert report["skipped"] == {"silent": 3}
    for rel in ("alpha/tiny.wav", "alpha/dc.flac", "beta/one_sample.wav"):
        assert by_path[rel]["reason"] == "silent", by_path[rel]
        assert by_path[rel]["detail"].startswith("largest departure from the mean ")
    assert by_path["beta/quiet.wav"]["status"] == "used"


@pytest.mark.parametrize("inside", [True, False])
def test_the_prepared_folder_finds_its_recordings_from_a_copy_at_another_depth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inside: bool
) -> None:
    """A DVC experiment runs in a copy of the repository, reusing prepared folders from the cache: a collection
    inside the repository is copied with it (paths relative to the prepared folder), one outside is read in place
    (absolute paths), whatever depth the copy lies at."""
    repo = tmp_path / "repo"
    root = (repo / "recordings") if inside else (tmp_path / "elsewhere" / "recordings")
    _grouped_collection(root, n_species=2, n_recordings=3, clips_per=1)
    repo.mkdir(exist_ok=True)
    monkeypatch.chdir(repo)  # stages run in the repository
    prepare(base_params(root, source="csv", csv="clips.csv"), repo / "data" / "prepared")
    paths = [c.path for c in read_manifest(repo / "data" / "prepared" / "manifest.csv")]
    assert all(Path(p).is_absolute() != inside for p in paths)
    copy = tmp_path / "exps" / "run" / "deeper" / "repo"  # as .dvc/tmp/exps/standalone/tmpXXXX
    shutil.copytree(repo, copy)
    for c in read_manifest(copy / "data" / "prepared" / "manifest.csv"):
        found = (copy / "data" / "prepared" / c.path).resolve()
        assert found.is_file() and found.is_relative_to(copy if inside else root)


# -- one file, two spellings (issue 28): "the same file" is decided by the file, not by how a path spells it ------
def _spelled_twice(tmp_path: Path, second: str, label: str = "alpha", split: str | None = None) -> Path:
    """The small CSV collection plus ``alpha/rec0.wav`` listed again as ``second`` (line 14); with ``split``, a
    split column puts every other row in train. The CSV lies in the collection's folder."""
    root = tmp_path / "coll"
    rows = _small_csv_collection(root)
    if split is None:
        write_csv(root / "l.csv", [*rows, (second, label)], ("path", "label"))
    else:
        rows = [(*row, "train") for row in rows]
        write_csv(root / "l.csv", [*rows, (second, label, split)], ("path", "label", "split"))
    return root


@pytest.mark.parametrize("how", ["absolute", "symlink", "hardlink", "dotdot"])
def test_one_file_spelled_twice_in_a_csv_is_used_once(tmp_path: Path, how: str) -> None:
    root = tmp_path / "coll"
    second = {
        "absolute": str(root / "alpha" / "rec0.wav"),
        "symlink": "alpha/linked.wav",
        "hardlink": "beta/hard.wav",
        "dotdot": "beta/../alpha/rec0.wav",
    }[how]
    root = _spelled_twice(tmp_path, second)
    if how == "symlink":
        os.symlink("rec0.wav", root / "alpha" / "linked.wav")
    elif how == "hardlink":
        os.link(root / "alpha" / "rec0.wav", root / "beta" / "hard.wav")
    report = prepare(base_params(root, source="csv", csv="l.csv"), tmp_path / "prepared")
    assert (report["n_files"], report["n_used"], report["skipped"]) == (13, 12, {"duplicate": 1})
    dup = next(e for e in report["files"] if e.get("reason") == "duplicate")
    assert dup["path"] == second
    same = "repeats line 2" if how == "dotdot" else "the same file as 'alpha/rec0.wav' on line 2"  # as spelled
    assert dup["detail"] == f"{same} of l.csv (line 14); the file is used once"
    manifest = read_manifest(tmp_path / "prepared" / "manifest.csv")
    reached = [(tmp_path / "prepared" / c.path).resolve() for c in manifest]
    assert len(reached) == len(set(reached)) == 12  # one recording, one place in the splits


@pytest.mark.parametrize(("how", "label", "split"), [("symlink", "beta", "train"), ("absolute", "alpha", "test")])
def test_one_file_spelled_twice_with_another_label_or_split_names_both_lines(
    tmp_path: Path, how: str, label: str, split: str
) -> None:
    root = tmp_path / "coll"
    second = "alpha/linked.wav" if how == "symlink" else str(root / "alpha" / "rec0.wav")
    root = _spelled_twice(tmp_path, second, label=label, split=split)
    if how == "symlink":
        os.symlink("rec0.wav", root / "alpha" / "linked.wav")
    with pytest.raises(ValueError) as exc:
        prepare(base_params(root, source="csv", csv="l.csv"), tmp_path / "prepared")
    then = "'beta', split train" if label == "beta" else "'alpha', split test"
    assert str(exc.value) == (
        f"{root / 'l.csv'}: lines 2 and 14 list 'alpha/rec0.wav' and {second!r}, one file, as 'alpha', split train "
        f"and as {then}; a file has one species, one split and one recording"
    )
    assert not (tmp_path / "prepared").exists()


def test_a_hard_link_under_another_species_folder_is_used_once(tmp_path: Path) -> None:
    for label in ("alpha", "beta"):
        for r in range(4):
            write_tone(tmp_path / "coll" / label / f"r{r}.wav", label, seed=r)
    os.link(tmp_path / "coll" / "alpha" / "r0.wav", tmp_path / "coll" / "beta" / "x.wav")
    report = prepare(base_params(tmp_path / "coll"), tmp_path / "prepared")
    by_path = {e["path"]: e for e in report["files"]}
    assert (report["n_files"], report["n_used"], report["skipped"]) == (9, 8, {"duplicate": 1})
    assert by_path["alpha/r0.wav"]["status"] == "used"
    assert (
        by_path["beta/x.wav"]["detail"] == "the same file as alpha/r0.wav (a hard link to it); each file is used once"
    )


@pytest.mark.parametrize("row", ["../outside.wav", "ABSOLUTE", "alpha/../../outside.wav"])
def test_a_csv_row_outside_data_path_is_refused_with_its_line(tmp_path: Path, row: str) -> None:
    """DVC watches data.path; a file outside it could change while `dvc status` says all is current."""
    root = tmp_path / "coll"
    write_tone(tmp_path / "outside.wav", "alpha", seed=7)
    row = str(tmp_path / "outside.wav") if row == "ABSOLUTE" else row
    root = _spelled_twice(tmp_path, row)
    with pytest.raises(ValueError) as exc:
        prepare(base_params(root, source="csv", csv="l.csv"), tmp_path / "prepared")
    assert str(exc.value) == (
        f"{root / 'l.csv'}:14: {row!r} lies outside data.path ({root}), which DVC watches for changes; "
        "move the file inside it or set data.path to a folder that holds both"
    )


def test_a_link_inside_data_path_to_a_file_elsewhere_is_used(tmp_path: Path) -> None:
    """DVC hashes data.path through its links, so the file a link inside it reaches is watched: allowed."""
    write_tone(tmp_path / "outside.wav", "alpha", seed=7)
    root = _spelled_twice(tmp_path, "alpha/far.wav")
    os.symlink(tmp_path / "outside.wav", root / "alpha" / "far.wav")
    report = prepare(base_params(root, source="csv", csv="l.csv"), tmp_path / "prepared")
    assert (report["n_used"], report["skipped"]) == (13, {})


@pytest.mark.parametrize("where", ["file", "folder"])
def test_a_name_that_is_not_utf8_is_one_line_naming_it(tmp_path: Path, where: str) -> None:
    root = tmp_path / "coll"
    for label in ("alpha", "beta"):
        for r in range(4):
            write_tone(root / label / f"r{r}.wav", label, seed=r)
    bad = os.fsdecode(b"Gr\xfcn")  # Latin-1 bytes, as an old recorder's card may hold
    if where == "file":
        shutil.copy(root / "alpha" / "r0.wav", root / "alpha" / f"{bad}.wav")
        shown = f"{root}/alpha/Gr\\xfcn.wav"
    else:
        shutil.copytree(root / "beta", root / bad)
        shown = f"{root}/Gr\\xfcn"
    params = base_params(root)
    with pytest.raises(ValueError) as exc:
        prepare(params, tmp_path / "prepared")
    assert str(exc.value) == f"{shown}: the name is not UTF-8 (bytes shown as \\xNN); rename it"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    cmd = [sys.executable, str(ROOT / "stages/prepare.py"), "prepared"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr == f"error: {exc.value}\n", r.stderr
    assert not (tmp_path / "prepared").exists()
