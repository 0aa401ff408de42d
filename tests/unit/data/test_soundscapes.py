"""Synthetic soundscapes: calls where the truth table says, the table read back by an independent reader, the same
bytes from the same settings."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from speciesclf.data.soundscapes import SoundscapeConfig, render_soundscape, write_soundscapes
from speciesclf.data.synth import SynthConfig, make_species
from speciesclf.detections import read_raven

SYNTH = SynthConfig(n_species=6, seed=3)
LOUD = SoundscapeConfig(recordings=2, seconds=60.0, bouts_per_minute=6.0, snr_db=(15.0, 20.0), seed=5)


def test_calls_sound_where_the_bouts_are_and_nowhere_else() -> None:
    audio, bouts = render_soundscape(SYNTH, LOUD, 0)
    sr = SYNTH.sample_rate
    assert len(audio) == 60 * sr and audio.dtype == np.int16 and bouts
    inside = np.zeros(len(audio), bool)
    for b, nxt in zip(bouts, [*bouts[1:], None], strict=True):
        assert 0 <= b.begin < b.end <= 60.0 and b.end - b.begin <= SYNTH.clip_seconds
        assert nxt is None or b.end < nxt.begin  # bouts one after the other
        inside[round(b.begin * sr) : round(b.end * sr)] = True
    power = audio.astype(np.float64) ** 2
    assert power[inside].mean() > 5 * power[~inside].mean()  # 15-20 dB calls over the background
    assert {b.species for b in bouts} <= {s.label for s in make_species(SYNTH)}


def test_written_truth_reads_back_the_same_with_csv_and_crowsetta(tmp_path: Path) -> None:
    paths = write_soundscapes(SYNTH, LOUD, tmp_path)
    assert [p.name for p in paths] == ["soundscape_00.wav", "soundscape_01.wav"]
    for i, path in enumerate(paths):
        _, bouts = render_soundscape(SYNTH, LOUD, i)
        table = tmp_path / "truth" / f"{path.stem}.selections.txt"
        with open(table, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        by_csv = [(float(r["Begin Time (s)"]), float(r["End Time (s)"]), r["Species"]) for r in rows]
        expected = [(round(b.begin, 6), round(b.end, 6), b.species) for b in bouts]
        assert by_csv == expected == read_raven(table)
        assert sf.info(path).duration == LOUD.seconds and sf.info(path).samplerate == SYNTH.sample_rate


def test_the_same_settings_give_the_same_bytes_and_another_seed_others(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    write_soundscapes(SYNTH, LOUD, a)
    write_soundscapes(SYNTH, LOUD, b)
    write_soundscapes(SYNTH, SoundscapeConfig(**{**LOUD.__dict__, "seed": 6}), c)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 4
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / files[0]).read_bytes() != (c / files[0]).read_bytes()
