"""Stage logic of `featurize`: MFCC windows of every clip of a split manifest, a few large arrays per split.

Layout of ``data/features/``: per split ``<split>_x.npy`` (float32 ``(windows, n_mfcc, frames)``, raw MFCC,
memory-mappable), ``<split>_y.npy`` (int64 species index) and ``<split>_windows.csv`` (the recording of each
window); ``labels.json`` (species and training counts), ``norm.json`` (training-split statistics only),
``features.json`` (the feature settings).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from speciesclf.audio import load_mono, windows
from speciesclf.data import SPLITS, read_manifest
from speciesclf.features import FeatureConfig, MFCCExtractor, Standardizer
from speciesclf.io import read_json, save_npy, write_json, write_text

__all__ = ["featurize", "load_split"]


def featurize(
    manifest: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: FeatureConfig,
    train_hop_seconds: float,
) -> dict[str, int]:
    """MFCC windows of every clip in a split manifest; paths are relative to the manifest's folder.

    Training recordings are cut with ``train_hop_seconds`` (overlap = augmentation); val/test recordings with a
    hop of one clip, so each part of a recording is scored once. Returns windows per split.
    """
    manifest = Path(manifest)
    out_dir = Path(out_dir)
    clips = read_manifest(manifest)
    labels = sorted({c.label for c in clips if c.split == "train"})
    index = {label: i for i, label in enumerate(labels)}
    extract = MFCCExtractor(config)
    win = config.clip_samples
    counts: dict[str, int] = {}
    train_counts = [0] * len(labels)
    for split in SPLITS:
        hop = max(1, round(train_hop_seconds * config.sample_rate)) if split == "train" else win
        feats, ys, rows = [], [], []
        for clip in (c for c in clips if c.split == split):
            if clip.label not in index:
                raise ValueError(f"{manifest}: species {clip.label!r} is in {split} but not in train")
            wave = load_mono(_resolve(manifest.parent, clip.path), config.sample_rate)
            for k, w in enumerate(windows(wave, win, hop)):
                feats.append(extract(w))
                ys.append(index[clip.label])
                rows.append((clip.recording_id, clip.path, k))
        x = np.stack(feats) if feats else np.zeros((0, config.n_mfcc, config.frames), np.float32)
        y = np.asarray(ys, dtype=np.int64)
        save_npy(out_dir / f"{split}_x.npy", x)
        save_npy(out_dir / f"{split}_y.npy", y)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(("recording_id", "path", "window"))
        w.writerows(rows)
        write_text(out_dir / f"{split}_windows.csv", buf.getvalue())
        counts[split] = len(y)
        if split == "train":
            train_counts = np.bincount(y, minlength=len(labels)).tolist()
            write_json(out_dir / "norm.json", Standardizer.fit(x).to_dict())
    write_json(out_dir / "labels.json", {"species": labels, "train_counts": train_counts})
    write_json(out_dir / "features.json", {**config.to_dict(), "train_hop_seconds": train_hop_seconds})
    return counts


def _resolve(base: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


def load_split(features_dir: str | os.PathLike[str], split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Standardised features, labels and the recording id of each window of one split."""
    d = Path(features_dir)
    norm = Standardizer.from_dict(read_json(d / "norm.json"))
    x = norm(np.load(d / f"{split}_x.npy", mmap_mode="r"))
    y = np.load(d / f"{split}_y.npy")
    with open(d / f"{split}_windows.csv", newline="", encoding="utf-8") as f:
        recordings = [row["recording_id"] for row in csv.DictReader(f)]
    return x, y, recordings
