"""A few real recordings of InsectSet32 (../shared/data/insectset32), read the way the csv source reads them.

Skipped where the data set is not present beside the project.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speciesclf.data.audio import load_mono
from speciesclf.data.sources import check_file, collect_csv

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "insectset32"
LABELS = DATA / "labels.csv"

pytestmark = pytest.mark.skipif(not LABELS.is_file(), reason=f"InsectSet32 not present ({DATA.resolve()})")


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    with open(LABELS, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def test_labels_csv_columns_and_files(rows: list[dict[str, str]]) -> None:
    assert list(rows[0]) == ["path", "label", "order", "class_id", "split"]
    assert len({r["label"] for r in rows}) == 32
    assert {r["split"] for r in rows} <= {"train", "validation", "test", ""}
    missing = [r["path"] for r in rows if not (DATA / r["path"]).is_file()]
    assert not missing, f"{len(missing)} listed file(s) not on disk, e.g. {missing[:3]}"
    # names carry literal URL escapes; they are file names, not something to decode
    escaped = [r["path"] for r in rows if "%20" in r["path"] and "%23" in r["path"]]
    assert escaped and all((DATA / p).is_file() for p in escaped)


def test_collect_csv_normalises_splits(rows: list[dict[str, str]]) -> None:
    clips, duplicates = collect_csv(LABELS)
    assert duplicates == []
    assert [c.path for c in clips] == [r["path"] for r in rows]
    assert [c.label for c in clips] == [r["label"] for r in rows]
    given = Counter(r["split"] for r in rows)
    splits = Counter(c.split for c in clips)
    assert set(splits) <= {"train", "val", "test", "?"}
    assert splits["val"] == given["validation"] > 0
    assert splits["?"] == given[""] > 0  # empty split: reported as no_split by prepare, never guessed
    assert splits["train"] == given["train"] and splits["test"] == given["test"]
    assert all(c.recording_id == c.path for c in clips)  # no recording_id column: each file is a recording


def _sample(rows: list[dict[str, str]]) -> list[str]:
    wavs = [r["path"] for r in rows if r["path"].endswith(".wav")]  # the float WAV ones
    flac_escaped = next(r["path"] for r in rows if r["path"].endswith(".flac") and "%23" in r["path"])
    flac_plain = next(r["path"] for r in rows if r["path"].endswith(".flac") and "%" not in r["path"])
    return [*wavs[:3], flac_escaped, flac_plain]


def test_check_file_accepts_real_files(rows: list[dict[str, str]]) -> None:
    sample = _sample(rows)
    assert sum(p.endswith(".wav") for p in sample) >= 2
    for rel in sample:
        path = DATA / rel
        check = check_file(path)
        assert check.ok, (rel, check)
        assert check.sample_rate == 44100 and check.channels == 1 and check.seconds > 0.5
        info = sf.info(path)
        if rel.endswith(".wav"):
            assert info.format == "WAV" and info.subtype == "FLOAT"
        else:
            assert info.format == "FLAC"
        assert check.seconds == pytest.approx(info.frames / info.samplerate)


def test_load_mono_gives_finite_mono_audio(rows: list[dict[str, str]]) -> None:
    for rel in _sample(rows)[2:4]:  # one float WAV, one FLAC with %20/%23 in its name
        wave = load_mono(DATA / rel, 44100)
        assert wave.ndim == 1 and wave.dtype == np.float32
        assert np.isfinite(wave).all() and np.abs(wave).max() > 0
        assert len(wave) == sf.info(DATA / rel).frames  # 44.1 kHz already: no resampling
