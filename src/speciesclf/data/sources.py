"""Labelled recordings from a user's collection: a folder per species, or a CSV. Every file is accounted for.

``folder``: ``<root>/<species>/**/<file>`` — the first folder level names the species, deeper nesting is
allowed (sites, dates); each file is its own recording. Files directly in ``<root>`` have no species and are
reported as skipped.

``csv``: columns ``path,label`` and optionally ``split`` (train / val / test; ``validation`` is accepted for val)
and ``recording_id`` (files cut from one recording share it, so a split keeps them together). Paths are relative
to the CSV's folder. Other columns are ignored.

:func:`check_file` decodes each file once and says why it cannot be used (``missing``, ``empty``, ``not_audio``,
``zero_length``, ``unreadable``, ``non_finite``, ``silent``: see :func:`~speciesclf.data.audio.load_audio`).
"""

from __future__ import annotations

import csv
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from speciesclf.data.audio import AudioError, load_audio
from speciesclf.data.manifest import Clip

__all__ = ["FileCheck", "check_file", "collect_csv", "collect_folder"]

SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "dev": "val", "test": "test"}


@dataclass(frozen=True)
class FileCheck:
    ok: bool
    reason: str = ""
    detail: str = ""
    seconds: float = 0.0
    sample_rate: int = 0
    channels: int = 0


def check_file(path: str | os.PathLike[str]) -> FileCheck:
    """Decode a file fully and say whether it can be used (reasons: :func:`speciesclf.data.audio.load_audio`)."""
    try:
        data, sr = load_audio(path)
    except AudioError as exc:
        return FileCheck(False, exc.reason, exc.detail)
    return FileCheck(True, seconds=data.shape[1] / sr, sample_rate=sr, channels=data.shape[0])


def collect_folder(root: str | os.PathLike[str]) -> tuple[list[Clip], list[dict[str, str]]]:
    """Clips (paths relative to ``root``) and the files that name no species."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data.path: {root} is not a folder (data.source: folder expects species sub-folders)")
    clips, unlabelled = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            unlabelled.append({"path": rel.as_posix(), "reason": "hidden", "detail": "hidden file or folder"})
        elif len(rel.parts) < 2:
            unlabelled.append({"path": rel.as_posix(), "reason": "no_label", "detail": "not inside a species folder"})
        else:
            clips.append(Clip(rel.as_posix(), rel.parts[0], rel.as_posix()))
    return clips, unlabelled


def collect_csv(csv_path: str | os.PathLike[str]) -> tuple[list[Clip], list[dict[str, str]]]:
    """Clips from a CSV (paths as written, relative to the CSV's folder; splits normalised to train/val/test) and
    the rows that repeat an earlier row exactly (each file is used once; the repeats are reported as skipped).

    One file listed with two labels, splits or recordings is an error naming both lines: keeping either would
    guess, and keeping both would put one recording in two splits.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ValueError(f"data.path: {csv_path} is not a file (data.source: csv expects a CSV)")
    try:
        rows = _read_csv(csv_path)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{csv_path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    clips, duplicates = _once_each(csv_path, rows)
    _check_recording_splits(csv_path, clips)
    return clips, duplicates


def _read_csv(csv_path: Path) -> list[tuple[int, Clip]]:
    """``(line number, clip)`` per row."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{csv_path}: missing column(s) {sorted(missing)}; expected path,label[,split,recording_id]"
            )
        has_split = "split" in (reader.fieldnames or ())
        rows = []
        for line, row in enumerate(reader, start=2):
            path, label = (row["path"] or "").strip(), (row["label"] or "").strip()
            if not path or not label:
                raise ValueError(f"{csv_path}:{line}: empty path or label")
            split = (row.get("split") or "").strip().lower()
            if split and split not in SPLIT_ALIASES:
                raise ValueError(f"{csv_path}:{line}: split {split!r}; expected one of train, val, test (or empty)")
            # an empty split in a CSV that has splits is kept as "?" so prepare can report it instead of guessing
            split = SPLIT_ALIASES[split] if split else ("?" if has_split else "")
            rows.append((line, Clip(path, label, (row.get("recording_id") or "").strip() or path, split)))
    return rows


def _once_each(csv_path: Path, rows: list[tuple[int, Clip]]) -> tuple[list[Clip], list[dict[str, str]]]:
    """Each file once; exact repeats reported as ``duplicate``, contradictory rows an error."""
    first: dict[str, tuple[int, Clip]] = {}
    clips, duplicates = [], []
    for line, clip in rows:
        key = posixpath.normpath(clip.path)  # "a/x.wav", "./a/x.wav" and "a//x.wav" are one file
        if key not in first:
            first[key] = (line, clip)
            clips.append(clip)
            continue
        line0, clip0 = first[key]
        if _as_recording(clip0) != _as_recording(clip):
            raise ValueError(
                f"{csv_path}: lines {line0} and {line} list {clip.path!r} as {_describe(clip0)} and as "
                f"{_describe(clip)}; a file has one species, one split and one recording"
            )
        detail = f"repeats line {line0} of {csv_path.name} (line {line}); the file is used once"
        duplicates.append({"path": clip.path, "label": clip.label, "reason": "duplicate", "detail": detail})
    return clips, duplicates


def _as_recording(clip: Clip) -> tuple[str, str, str]:
    recording = posixpath.normpath(clip.recording_id) if clip.recording_id == clip.path else clip.recording_id
    return clip.label, clip.split, recording


def _describe(clip: Clip) -> str:
    where = f", split {clip.split}" if clip.split not in ("", "?") else ""
    return f"{clip.label!r}{where}" + (f", recording {clip.recording_id!r}" if clip.recording_id != clip.path else "")


def _check_recording_splits(csv_path: Path, clips: list[Clip]) -> None:
    given: dict[str, str] = {}
    for c in clips:
        if c.split in ("", "?"):
            continue
        if given.setdefault(c.recording_id, c.split) != c.split:
            raise ValueError(
                f"{csv_path}: recording {c.recording_id!r} is given splits {given[c.recording_id]} and {c.split}; "
                "windows of one recording must stay in one split"
            )
