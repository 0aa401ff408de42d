"""Tests of the synthetic species-call generator, on small real datasets written to tmp_path."""

from __future__ import annotations

import csv
import hashlib
import itertools
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speciesclf.data.synth import KINDS, SynthConfig, generate, make_species, species_counts

SMALL = SynthConfig(n_species=6, min_clips=3, imbalance=5.0, clip_seconds=1.0)


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    return generate(SynthConfig(n_species=6, min_clips=3, imbalance=5.0, clip_seconds=2.0), out)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path, fmt: str) -> None:
    cfg = SynthConfig(n_species=6, min_clips=3, imbalance=5.0, clip_seconds=1.0, audio_format=fmt)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(cfg, a)
    generate(cfg, b)
    generate(SynthConfig(**{**cfg.__dict__, "seed": 1}), c)
    da, db, dc = _digests(a), _digests(b), _digests(c)
    assert da == db
    assert any(p.endswith(f".{fmt}") for p in da)
    shared = set(da) & set(dc)
    assert da["manifest.csv"] != dc["manifest.csv"] or any(da[p] != dc[p] for p in shared)
    assert all(da[p] != dc[p] for p in shared if p != "manifest.csv")


def test_regenerating_into_the_same_folder_is_stable_and_prunes_stale_files(tmp_path: Path) -> None:
    generate(SynthConfig(n_species=7, min_clips=4, imbalance=5.0, clip_seconds=0.5), tmp_path)
    manifest = generate(SMALL, tmp_path)
    fresh = tmp_path / "fresh"
    generate(SMALL, fresh)
    listed = {r["path"] for r in _manifest(manifest)}
    on_disk = {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "audio").rglob("*") if p.is_file()}
    assert on_disk == listed
    assert {k: v for k, v in _digests(tmp_path).items() if not k.startswith("fresh/")} == _digests(fresh)


@pytest.mark.parametrize(
    "cfg",
    [
        SynthConfig(),
        SMALL,
        SynthConfig(n_species=40, min_clips=5, imbalance=12.0),
        SynthConfig(n_species=2, imbalance=1.0),
    ],
    ids=["default", "small", "mid", "flat"],
)
def test_species_counts_long_tail(cfg: SynthConfig) -> None:
    counts = species_counts(cfg)
    assert len(counts) == cfg.n_species
    assert abs(counts[0] - round(cfg.min_clips * cfg.imbalance)) <= 1
    assert counts[-1] == cfg.min_clips
    assert all(a >= b for a, b in itertools.pairwise(counts))
    assert min(counts) >= cfg.min_clips


def test_default_config_size() -> None:
    counts = species_counts(SynthConfig())
    assert counts[0] == 90 and counts[-1] == 3
    assert 700 <= sum(counts) <= 900  # the "~800 clips" the pipeline is sized for


def test_make_species_is_deterministic_and_well_formed() -> None:
    cfg = SynthConfig()
    species = make_species(cfg)
    assert species == make_species(cfg)
    assert species != make_species(SynthConfig(seed=1))
    labels = [s.label for s in species]
    assert labels == sorted(labels) and len(set(labels)) == cfg.n_species
    for i, s in enumerate(species):
        assert s.index == i and s.kind in KINDS and s.label == f"sp{i:02d}_{s.kind}"
        assert 0.08 <= s.call_dur <= 1.6
        top = s.freq * 2 ** (abs(s.sweep_oct) / 2) if s.kind in ("whistle", "stack", "trill") else s.freq
        assert top + s.bandwidth / 2 < 7500
        if s.twin_of is not None:
            src = species[s.twin_of]
            assert src.twin_of is None and src.kind == s.kind
            assert abs(s.freq / src.freq - 1) < 0.15
    assert sum(s.twin_of is not None for s in species) == round(cfg.confusable_fraction * cfg.n_species)
    assert len({s.kind for s in species}) == len(KINDS)


def test_manifest_matches_files_and_recordings(small_dataset: Path) -> None:
    root = small_dataset.parent
    header = small_dataset.read_text().splitlines()[0]
    assert header == "path,label,recording_id"
    rows = _manifest(small_dataset)
    paths = [r["path"] for r in rows]
    assert paths == sorted(paths)
    on_disk = sorted(p.relative_to(root).as_posix() for p in (root / "audio").rglob("*") if p.is_file())
    assert on_disk == paths
    assert len(rows) == sum(species_counts(SynthConfig(n_species=6, min_clips=3, imbalance=5.0)))
    recs: dict[str, set[str]] = defaultdict(set)
    clips_per_rec: dict[str, int] = defaultdict(int)
    for r in rows:
        parts = Path(r["path"]).parts
        assert parts[0] == "audio" and parts[1] == r["label"]
        assert Path(r["path"]).name.startswith(r["recording_id"] + "-c")
        assert r["recording_id"].startswith(r["label"] + "-r")
        recs[r["label"]].add(r["recording_id"])
        clips_per_rec[r["recording_id"]] += 1
    assert len(recs) == 6
    assert all(len(ids) >= 3 for ids in recs.values())
    assert sum(len(ids) for ids in recs.values()) == len(clips_per_rec)  # ids unique across species too
    assert set(clips_per_rec.values()) <= {1, 2}


def test_audio_files_are_valid_and_band_limited(small_dataset: Path) -> None:
    root = small_dataset.parent
    for r in _manifest(small_dataset):
        path = root / r["path"]
        info = sf.info(path)
        assert (info.channels, info.samplerate, info.frames, info.subtype) == (1, 16000, 32000, "PCM_16")
        x, _ = sf.read(path, dtype="int16")
        peak = int(np.abs(x.astype(np.int32)).max())
        assert 0.4 * 32767 < peak < 0.6 * 32767  # peak-normalised, far from clipping
        y = x.astype(np.float64)
        assert y.std() > 100  # not silent
        power = np.abs(np.fft.rfft(y)) ** 2
        freqs = np.fft.rfftfreq(y.size, 1 / 16000)
        assert power[freqs < 7500].sum() / power.sum() > 0.99


def test_recording_constraints_hold_when_clips_are_few(tmp_path: Path) -> None:
    cfg = SynthConfig(n_species=3, min_clips=3, imbalance=1.0, clip_seconds=0.5, clips_per_recording=5)
    rows = _manifest(generate(cfg, tmp_path))
    recs: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        recs[r["label"]].add(r["recording_id"])
    assert len(rows) == 9 and all(len(ids) == 3 for ids in recs.values())


def test_other_sample_rate_keeps_band_limit(tmp_path: Path) -> None:
    cfg = SynthConfig(n_species=2, min_clips=3, imbalance=1.0, clip_seconds=0.5, sample_rate=22050)
    rows = _manifest(generate(cfg, tmp_path))
    x, sr = sf.read(tmp_path / rows[0]["path"])
    assert sr == 22050 and x.shape == (round(0.5 * 22050),)
    power = np.abs(np.fft.rfft(x)) ** 2
    assert power[np.fft.rfftfreq(x.size, 1 / sr) < 7500].sum() / power.sum() > 0.99


def test_species_are_discriminable_at_high_snr(tmp_path: Path) -> None:
    """Sanity: with clean clips and no twins, nearest-centroid on log spectra beats chance by far."""
    cfg = SynthConfig(
        n_species=6,
        min_clips=6,
        imbalance=1.0,
        clip_seconds=1.0,
        snr_db=(20.0, 20.0),
        distractor_prob=0.0,
        confusable_fraction=0.0,
    )
    rows = _manifest(generate(cfg, tmp_path))
    edges = np.linspace(0, 8000, 65)
    feats, labels, recs = [], [], []
    for r in rows:
        x, sr = sf.read(tmp_path / r["path"])
        power = np.abs(np.fft.rfft(x)) ** 2
        bands = np.histogram(np.fft.rfftfreq(x.size, 1 / sr), bins=edges, weights=power)[0]
        feats.append(np.log(bands + 1e-9))
        labels.append(r["label"])
        recs.append(r["recording_id"])
    feats_a, labels_a, recs_a = np.array(feats), np.array(labels), np.array(recs)
    classes = sorted(set(labels))
    correct = 0
    for i in range(len(rows)):  # leave one recording out, so a clip's own session never helps
        train = recs_a != recs_a[i]
        centroids = np.stack([feats_a[train & (labels_a == c)].mean(0) for c in classes])
        correct += classes[int(np.argmin(((centroids - feats_a[i]) ** 2).sum(1)))] == labels_a[i]
    assert correct / len(rows) > 0.6  # chance is 1/6


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_species": 1}, "n_species"),
        ({"min_clips": 2}, "min_clips"),
        ({"imbalance": 0.5}, "imbalance"),
        ({"clip_seconds": 0.0}, "clip_seconds"),
        ({"sample_rate": 8000}, "sample_rate"),
        ({"clips_per_recording": 0}, "clips_per_recording"),
        ({"snr_db": (10.0, 0.0)}, "snr_db"),
        ({"distractor_prob": 1.5}, "distractor_prob"),
        ({"confusable_fraction": -0.1}, "confusable_fraction"),
        ({"audio_format": "mp3"}, "audio_format"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_config_raises_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SynthConfig(**kwargs)
