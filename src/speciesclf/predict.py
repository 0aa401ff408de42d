"""Predict species in new recordings with a trained model directory.

    python -m speciesclf.predict models/phase2b recordings/ extra.flac --top-k 3 --out predictions.csv

Each recording is cut into clip windows exactly as the pipeline cuts test recordings (hop = one clip; a short
recording is wrap-padded), each window gets species probabilities, and the recording gets the mean of its windows'
probabilities. The CSV has one row per (file, level, window, rank); files that cannot be used get one
``skipped`` row with the reason, and a line on stderr.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from speciesclf.audio import load_mono, windows
from speciesclf.experiment import load_model
from speciesclf.features import FeatureConfig, MFCCExtractor, Standardizer
from speciesclf.io import write_text
from speciesclf.sources import check_file

__all__ = ["main", "predict_file"]

COLUMNS = ("path", "level", "window", "start_seconds", "rank", "species", "probability", "note")


def _expand(inputs: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        else:
            files.append(p)  # a missing file is reported as skipped, not raised
    return files


class Predictor:
    def __init__(self, model_dir: str | os.PathLike[str]) -> None:
        self.model, meta = load_model(model_dir)
        self.species: list[str] = meta["species"]
        feats = dict(meta["features"])
        feats.pop("train_hop_seconds", None)
        self.config = FeatureConfig.from_dict(feats)
        self.extract = MFCCExtractor(self.config)
        self.norm = Standardizer.from_dict(meta["norm"])

    @torch.no_grad()
    def window_proba(self, path: Path) -> np.ndarray:
        """``(windows, species)`` probabilities of one recording."""
        wave = load_mono(path, self.config.sample_rate)
        clips = windows(wave, self.config.clip_samples, self.config.clip_samples)
        x = torch.from_numpy(self.norm(self.extract(clips)))
        return torch.softmax(self.model(x).double(), dim=1).numpy()


def predict_file(predictor: Predictor, path: Path, top_k: int) -> list[tuple]:
    check = check_file(path)
    if not check.ok:
        return [(str(path), "skipped", "", "", "", "", "", f"{check.reason}: {check.detail}")]
    proba = predictor.window_proba(path)
    rows: list[tuple] = []
    k = min(top_k, proba.shape[1])

    def ranked(p: np.ndarray) -> Iterable[tuple[int, str, str]]:
        for rank, i in enumerate(np.argsort(-p, kind="stable")[:k], start=1):
            yield rank, predictor.species[i], f"{p[i]:.6f}"

    for rank, sp, pr in ranked(proba.mean(axis=0)):
        rows.append((str(path), "recording", "", "", rank, sp, pr, ""))
    for w, p in enumerate(proba):
        start = f"{w * predictor.config.clip_seconds:.3f}"
        if w == len(proba) - 1 and len(proba) > 1:
            start = f"{max(check.seconds - predictor.config.clip_seconds, 0):.3f}"  # the end-aligned last window
        for rank, sp, pr in ranked(p):
            rows.append((str(path), "window", w, start, rank, sp, pr, ""))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m speciesclf.predict",
        description="Top-k species per window and per recording for audio files (any format libsndfile reads).",
        epilog=__doc__.split("\n\n", 2)[-1],
    )
    parser.add_argument("model_dir", help="a trained model directory (e.g. models/phase2b: model.pt + model.json)")
    parser.add_argument("inputs", nargs="+", help="audio files and/or folders (searched recursively)")
    parser.add_argument("--top-k", type=int, default=3, help="species per window/recording (default 3)")
    parser.add_argument("--out", help="write the CSV here (written whole); default: standard output")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be >= 1")
    if not (Path(args.model_dir) / "model.json").is_file():
        parser.error(f"{args.model_dir}: not a model directory (no model.json); train one with `dvc repro`")
    predictor = Predictor(args.model_dir)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    n_ok = n_skipped = 0
    for path in _expand(args.inputs):
        rows = predict_file(predictor, path, args.top_k)
        if rows[0][1] == "skipped":
            n_skipped += 1
            print(f"skipped {path}: {rows[0][-1]}", file=sys.stderr)
        else:
            n_ok += 1
        writer.writerows(rows)
    if args.out:
        write_text(args.out, buf.getvalue())
    else:
        sys.stdout.write(buf.getvalue())
    print(f"predicted {n_ok} recording(s), skipped {n_skipped}", file=sys.stderr)
    return 0 if n_ok else 1


if __name__ == "__main__":
    sys.exit(main())
