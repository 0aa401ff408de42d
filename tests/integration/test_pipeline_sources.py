"""The real pipeline on a user's collection: `dvc repro` with data.source folder, then csv, recordings outside the
repository (a dependency of `prepare`, so DVC notices when one changes).

Slow (two full pipelines in a temporary git repository, each stage a fresh Python with torch), so marked `slow`.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from dvcrepo import commit, copy_project, sh

pytestmark = pytest.mark.slow

SR = 16000
FREQS = {"cricket": 500.0, "katydid": 1500.0, "cicada": 3000.0}


def write_tone(path: Path, freq: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    wave = 0.4 * np.sin(2 * np.pi * freq * t + rng.uniform(0, np.pi)) + 0.02 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), SR, subtype="PCM_16")


def write_collections(base: Path) -> tuple[Path, Path]:
    """A species-folder collection (plus one bad file) and a CSV collection with given splits."""
    folder, csv_dir = base / "recordings", base / "csv collection"
    rows = []
    for s, (label, freq) in enumerate(FREQS.items()):
        for r in range(4):
            write_tone(folder / label / f"{label} {r}.wav", freq * (1 + 0.02 * r), 10 * s + r)
            rel = f"audio/{label}/{r}.flac"
            write_tone(csv_dir / rel, freq * (1 + 0.02 * r), 100 + 10 * s + r)
            rows.append((rel, label, ("train", "train", "validation", "test")[r], f"{label}-{r}"))
    (folder / "cricket" / "broken.wav").write_bytes(b"RIFF not really a wav")
    write_tone(csv_dir / "audio/cicada/extra.flac", 3000.0, 999)
    rows.append(("audio/cicada/extra.flac", "cicada", "", "cicada-extra"))  # no split given: reported
    with open(csv_dir / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(("path", "label", "split", "recording_id"))
        w.writerows(rows)
    return folder, csv_dir


def set_params(repo: Path, **data: object) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(data)
    params["features"].update(sample_rate=SR, clip_seconds=1.0, train_hop_seconds=1.0)
    params["train"].update(epochs=1, warmup_epochs=0)
    params["gamma_sweep"]["gammas"] = [2.0]  # one sweep run is enough here; the sweep itself is tested elsewhere
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def check_outputs(repo: Path, source: str, n_files: int) -> dict:
    metrics = json.loads((repo / "metrics/baseline.json").read_text())
    for level in ("window", "recording"):
        assert {"accuracy", "f1_macro"} <= set(metrics[level]), level
    assert metrics["recording"]["n_recordings"] == len(FREQS)  # one test recording per species
    report = json.loads((repo / "data/prepared/report.json").read_text())
    assert report["source"] == source
    assert report["n_files"] == len(report["files"]) == n_files == report["n_used"] + report["n_skipped"]
    assert report["n_used"] == 3 * 4 and report["n_species"] == 3
    assert (repo / "metrics/summary.json").is_file() and (repo / "reports/results.md").is_file()
    return report


def test_folder_then_csv_source_through_dvc_repro(tmp_path: Path) -> None:
    folder, csv_dir = write_collections(tmp_path / "outside")
    repo = copy_project(tmp_path / "repo")
    set_params(repo, source="folder", path=str(folder), csv=None)
    commit(repo, "project")  # dvclive needs a commit to exist

    # 1. a folder per species
    sh(repo, "dvc", "repro")
    report = check_outputs(repo, "folder", n_files=3 * 4 + 1)
    assert {e["path"]: e.get("reason") for e in report["files"]}["cricket/broken.wav"] == "not_audio"
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status").stdout
    commit(repo, "folder run")

    # 2. the same study from a CSV with given splits
    set_params(repo, source="csv", path=str(csv_dir), csv="labels.csv")
    commit(repo, "csv source")
    sh(repo, "dvc", "repro")
    report = check_outputs(repo, "csv", n_files=3 * 4 + 1)
    used = {e["path"]: e["split"] for e in report["files"] if e["status"] == "used"}
    assert sorted(used.values()) == sorted(["train"] * 6 + ["val"] * 3 + ["test"] * 3)
    assert {e["path"]: e.get("reason") for e in report["files"]}["audio/cicada/extra.flac"] == "no_split"
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status").stdout
    commit(repo, "csv run")

    # 3. a recording changes outside the repository: prepare is out of date
    write_tone(csv_dir / "audio/katydid/1.flac", 2222.0, 12345)
    status = sh(repo, "dvc", "status", "--json").stdout
    changed = json.loads(status)
    assert changed == {"prepare": [{"changed deps": {str(csv_dir): "modified"}}]}, status


def test_broken_and_looping_links_stop_dvc_until_dvcignored(tmp_path: Path) -> None:
    """DVC hashes the dependency folder before `prepare` runs and stops on a link it cannot follow (the messages
    docs/real-recordings.md quotes); listed in .dvcignore, the links pass DVC and `prepare` reports them."""
    repo = copy_project(tmp_path / "repo")
    rec = repo / "recordings"  # inside the repository: the repository's .dvcignore applies to it
    for s, (label, freq) in enumerate(FREQS.items()):
        for r in range(4):
            write_tone(rec / label / f"{r}.wav", freq * (1 + 0.02 * r), 10 * s + r)
    set_params(repo, source="folder", path="recordings", csv=None)
    os.symlink(tmp_path / "deleted.wav", rec / "cricket" / "gone.wav")
    commit(repo, "project")

    gone = rec / "cricket" / "gone.wav"
    status = sh(repo, "dvc", "status", check=False)
    assert status.returncode == 255, status
    assert f"ERROR: unexpected error - [Errno 2] No such file or directory: '{gone}'" in status.stderr
    repro = sh(repo, "dvc", "repro", "prepare", check=False)
    assert repro.returncode == 255 and not (repo / "data/prepared").exists(), repro
    assert f"ERROR: failed to reproduce 'prepare': [Errno 2] No such file or directory: '{gone}'" in repro.stderr

    with open(repo / ".dvcignore", "a", encoding="utf-8") as f:
        f.write("recordings/cricket/gone.wav\n")
    assert sh(repo, "dvc", "status").returncode == 0
    loop = rec / "katydid" / "loop.wav"
    os.symlink("loop.wav", loop)
    status = sh(repo, "dvc", "status", check=False)
    assert status.returncode == 255, status
    assert f"ERROR: unexpected error - [Errno 40] Too many levels of symbolic links: '{loop}'" in status.stderr

    with open(repo / ".dvcignore", "a", encoding="utf-8") as f:
        f.write("recordings/katydid/loop.wav\n")
    sh(repo, "dvc", "repro", "prepare")
    report = json.loads((repo / "data/prepared/report.json").read_text())
    skipped = {e["path"]: e["reason"] for e in report["files"] if e["status"] == "skipped"}
    assert skipped == {"cricket/gone.wav": "broken_link", "katydid/loop.wav": "link_loop"}
    assert (report["n_files"], report["n_used"]) == (14, 12)
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status", "prepare").stdout
