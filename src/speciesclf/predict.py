"""Predict species in new recordings with a trained model directory.

    python -m speciesclf.predict models/phase2b recordings/ extra.flac --top-k 3 --out predictions.csv

Each recording is cut into clip windows exactly as the pipeline cuts test recordings (hop = one clip unless
``--hop SECONDS`` overlaps them, a last window aligned to the recording's end; a short recording is wrap-padded),
each window gets species probabilities, and the recording gets the mean of its windows' probabilities. Recordings
stream through: decoded and resampled block by block, windows scored in batches, so memory does not grow with a
recording's length (hours from a field recorder are fine); the rows of the file being done are held.

An ensemble's directory (``models/selected``) averages its members' probabilities: a recording's, the mean over
members of each one's mean over its own windows; a window's, on one time grid, the shortest windows' (members with
another front end or time expansion are read at those windows' centres; :mod:`speciesclf.predictor`). The CSV has
one row per (file, level, window, rank); files that cannot be used get one ``skipped`` row with the reason, and a
line on stderr. Detections (``--format raven|audacity``) apply each species' threshold, by default those fitted on
held-out windows and shipped in the model's card (:mod:`speciesclf.thresholds`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from speciesclf import __version__
from speciesclf.data.audio import AudioError, truncation
from speciesclf.data.sources import walk
from speciesclf.detections import (
    SUMMARY_COLUMNS,
    Detection,
    Detector,
    recording_summary,
    write_audacity,
    write_raven,
)
from speciesclf.features.birdnet import BirdNETError
from speciesclf.files import atomic_path, write_csv, write_json
from speciesclf.models.saved import CARD, WeightsError
from speciesclf.predictor import Predictor, Totals
from speciesclf.progress import note, progress
from speciesclf.thresholds import ThresholdsError, read_thresholds, threshold_array

__all__ = ["COLUMNS", "Predictor", "main", "predict_file", "provenance"]

COLUMNS = ("path", "level", "window", "start_seconds", "rank", "species", "probability", "note")
FORMATS = ("csv", "raven", "audacity")
DEFAULT_MIN_SCORE = 0.5  # the global threshold where no fitted one applies


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


def predict_file(
    predictor: Predictor,
    path: Path,
    top_k: int,
    keep: np.ndarray | None = None,
    detector: Detector | None = None,
    window_rows: bool = True,
) -> list[tuple]:
    """CSV rows of one file: the recording's top-k species, then each window's; or one ``skipped`` row. ``keep``
    (a mask over species) ranks only those; ``detector`` is fed every window; without ``window_rows`` (detection
    tables, which write none) the recording's rows alone.

    The audio streams through in blocks and batches; the file's rows (a few per window) are what is held."""
    keep = np.ones(len(predictor.species), bool) if keep is None else keep
    k = min(top_k, int(keep.sum()))

    def ranked(p: np.ndarray) -> Iterator[tuple[int, str, str]]:
        for rank, i in enumerate(np.argsort(-np.where(keep, p, -1.0), kind="stable")[:k], start=1):
            yield rank, predictor.species[i], f"{p[i]:.6f}"

    rows: list[tuple] = []
    totals: Totals = {}
    w, damage = 0, truncation(path)
    try:
        for starts, proba in predictor.windows(path, totals):
            for start, p in zip(starts, proba, strict=True):
                if window_rows:
                    rows += [(str(path), "window", w, f"{start:.3f}", *r, "") for r in ranked(p)]
                w += 1
            if detector is not None:
                detector.add(starts, proba)
    except AudioError as exc:
        if not w:
            return [(str(path), "skipped", "", "", "", "", "", f"{exc.reason}: {exc.detail}")]
        # damaged midway (a FLAC that loses sync): what came before the damage stands, with the reason
        damage = f"{exc.reason} after {w} window(s): {exc.detail}"
    recording = predictor.recording_of(totals)
    return [(str(path), "recording", "", "", *r, damage or "") for r in ranked(recording)] + rows


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
        "--thresholds",
        metavar="card|none|FILE",
        help="raven, audacity: each species' detection threshold: card (default: the thresholds fitted on held-out "
        "windows and shipped in model.json), none (one global --min-score) or a JSON FILE of species to thresholds",
    )
    parser.add_argument(
        "--min-score",
        type=float,
        metavar="X",
        help=f"raven, audacity: one threshold for every species (alone: instead of the card's); with --thresholds, "
        f"for the species it lacks (default {DEFAULT_MIN_SCORE})",
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
    if args.min_score is not None and not 0 <= args.min_score <= 1:
        parser.error(f"--min-score {args.min_score}: expected a score from 0 to 1")
    if not (Path(args.model_dir) / "model.json").is_file():
        parser.error(f"{args.model_dir}: not a model directory (no model.json); train one with `dvc repro`")
    if args.format == "csv" and args.out and Path(args.out).is_dir():
        parser.error(f"--out {args.out}: is a folder; expected the path of the CSV file to write")
    if args.format == "csv" and (args.thresholds is not None or args.min_score is not None):
        parser.error("--thresholds and --min-score apply to detections: add --format raven or --format audacity")
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
    target, _ = _place(out, "csv")
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
                predictor = _load(args.model_dir, args.hop)
                write([COLUMNS])
                n_ok, n_skipped = _run(args, lambda path, rows, detections: write(rows), predictor)
            _record(args, predictor, None)
        else:
            n_ok, n_skipped = _detect(args)
    except KeyboardInterrupt:  # a table being written is a temporary file, removed: nothing half-written
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk or a file-size limit while writing
        raise _fail(f"{exc.filename or args.out}: {exc.strerror or exc}") from None
    print(f"predicted {n_ok} recording(s), skipped {n_skipped}", file=sys.stderr)
    return 0 if n_ok else 1


def _thresholds(predictor: Predictor, args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    """Each species' detection threshold in model order, and how they were chosen (for the provenance)."""
    source = args.thresholds or ("none" if args.min_score is not None else "card")  # --min-score alone: global
    default = DEFAULT_MIN_SCORE if args.min_score is None else args.min_score
    if source == "none":
        return np.full(len(predictor.species), default), {"source": "global", "min_score": default}
    if source == "card":
        block, where = predictor.card.get("thresholds"), f"{Path(args.model_dir) / CARD}: thresholds"
        if block is None:
            note(
                f"{Path(args.model_dir) / CARD}: no fitted thresholds (a model from before they were fitted, or an "
                f"ensemble of different windows): every species at {default}"
            )
            return np.full(len(predictor.species), default), {"source": "global", "min_score": default}
    try:
        if source != "card":
            block, where = read_thresholds(source), f"--thresholds {source}"
        values = threshold_array(block, predictor.species, default, where)
    except ThresholdsError as exc:
        raise _fail(str(exc)) from None
    return values, {"source": "card" if source == "card" else str(Path(source).resolve()), "min_score": default}


def _run(
    args: argparse.Namespace,
    sink: Sink,
    predictor: Predictor | None = None,
    thresholds: np.ndarray | None = None,
) -> tuple[int, int]:
    """Predict every input file, each file's rows (and, given ``thresholds``, detections) to ``sink`` as it is done;
    the counts of files predicted and skipped."""
    predictor = predictor or _load(args.model_dir, args.hop)
    keep = _species_mask(predictor, args.species)
    files, empty = _expand(args.inputs)
    for folder in empty:
        print(f"skipped {folder}: a folder with no files", file=sys.stderr)
    if thresholds is not None:
        thresholds = np.where(keep, thresholds, np.inf)  # a species not kept is never detected
    n_ok, n_skipped = 0, len(empty)
    for path in progress(files, "predict", "file"):
        detector = None
        if thresholds is not None:
            detector = Detector(str(path), predictor.species, thresholds, predictor.clip_seconds)
        rows = predict_file(predictor, path, args.top_k, keep, detector, window_rows=args.format == "csv")
        if rows[0][1] == "skipped":
            n_skipped += 1
            note(f"skipped {path}: {rows[0][-1]}")
            sink(path, rows, None)
            continue
        n_ok += 1
        if rows[0][-1]:
            note(f"{path}: {rows[0][-1]}; its windows before the damage are kept")
        sink(path, rows, detector.finish(sf.info(path).duration) if detector is not None else [])
    return n_ok, n_skipped


def _detect(args: argparse.Namespace) -> tuple[int, int]:
    """Raven or Audacity tables: one per recording into a folder (``--out`` an existing folder or ending in
    ``/``), or one file; the place is checked before any work."""
    target, folder = _place(args.out, args.format)
    _check_writable(target if folder else target.parent, args.out)
    predictor = _load(args.model_dir, args.hop)
    files, _ = _expand(args.inputs)
    names = _table_names(files, args.format) if folder else None
    if not folder and args.format == "audacity" and len(files) > 1:
        raise _fail("--format audacity writes one label track per recording: give --out a folder for several")
    thresholds, chosen = _thresholds(predictor, args)
    band, found, summary = predictor.band, [], []

    def sink(path: Path, rows: list[tuple], detections: list[Detection] | None) -> None:
        if detections is None:
            return
        summary.extend(recording_summary(str(path), detections))
        if names is not None:
            _write_table(args.format, target / names[path], detections, band, many=False)
        else:
            found.extend(detections)

    counts = _run(args, sink, predictor, thresholds)
    if not folder:
        _write_table(args.format, target, found, band, many=len(files) > 1)
    write_csv(_beside(target, folder, "summary.csv"), SUMMARY_COLUMNS, summary)
    _record(args, predictor, {**chosen, "species": dict(zip(predictor.species, map(float, thresholds), strict=True))})
    return counts


def _place(out: str, fmt: str) -> tuple[Path, bool]:
    """Where ``--out`` writes, and whether it is a folder of tables (Raven or Audacity: an existing folder, or a
    name ending in ``/``). A symbolic link is written through, to the file it names, so that it stays a link."""
    folder = fmt != "csv" and (out.endswith(os.sep) or Path(out).is_dir())
    return (Path(os.path.realpath(out)) if Path(out).is_symlink() else Path(out)), folder


def _beside(target: Path, folder: bool, name: str) -> Path:
    """Where a file that goes with the output lies: in the output folder, or beside the output file, its stem first
    (``detections.txt`` → ``detections.summary.csv``)."""
    return target / name if folder else target.with_name(f"{target.stem}.{name}")


def _record(args: argparse.Namespace, predictor: Predictor, thresholds: dict[str, Any] | None) -> None:
    """The output's provenance (:func:`provenance`): a JSON file beside it, or one line on stderr for stdout."""
    facts = provenance(args.model_dir, thresholds, hop_seconds=args.hop)
    if args.out is None:
        print(
            f"model {facts['model_dir']} (model.json sha256 {facts['card_sha256'][:12]}), speciesclf "
            f"{facts['speciesclf']}",
            file=sys.stderr,
        )
        return
    target, folder = _place(args.out, args.format)
    write_json(_beside(target, folder, "provenance.json"), facts)


def provenance(model_dir: str | os.PathLike[str], thresholds: dict[str, Any] | None, **settings: Any) -> dict[str, Any]:
    """What made an output: the model directory, the sha256 of its ``model.json`` (its card: species, weights'
    training, fitted thresholds), the thresholds applied (None: no detections), the settings and the version."""
    card = Path(model_dir) / CARD
    return {
        "model_dir": str(Path(model_dir).resolve()),
        "card_sha256": hashlib.sha256(card.read_bytes()).hexdigest(),
        "thresholds": thresholds,
        **settings,
        "speciesclf": __version__,
    }


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
