"""Labelled recordings from a user's collection: a folder per species, or a CSV. Every file is accounted for.

``folder``: ``<root>/<species>/**/<file>`` — the first folder level names the species, deeper nesting is
allowed (sites, dates); each file is its own recording. Files directly in ``<root>`` have no species and are
reported as skipped. Symbolic links are followed, to files and to folders, as the user laid the collection out;
a link to nothing is checked like any file (``broken_link``, ``link_loop``), a link to a folder that contains it
is reported (``link_loop``) instead of followed forever, and a file reached twice, through a symbolic link or as a
hard link, is used once (the other paths are reported as ``duplicate``). A file or folder name that is not UTF-8
is an error naming it: manifests and reports are UTF-8.

``csv``: columns ``path,label`` and optionally ``split`` (train / val / test; ``validation`` is accepted for val)
and ``recording_id`` (files cut from one recording share it, so a split keeps them together). Paths are relative
to the CSV's folder and must lie inside ``data.path``, the folder DVC watches (a file outside would change
unseen). Other columns are ignored.

"The same file" is decided by the file itself (:func:`file_key`: device and inode), not by its spelling: a
relative and an absolute path, a symbolic link or a hard link to one file are one recording.

:func:`check_file` decodes each file once and says why it cannot be used (``missing``, ``empty``, ``not_audio``,
``zero_length``, ``unreadable``, ``non_finite``, ``silent``, ``broken_link``, ``link_loop``: see
:func:`~speciesclf.data.audio.load_audio`).
"""

from __future__ import annotations

import csv
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from speciesclf.data.audio import AudioError, load_audio
from speciesclf.data.manifest import Clip

__all__ = ["FileCheck", "check_file", "collect_csv", "collect_folder", "file_key", "walk"]

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


def file_key(path: str | os.PathLike[str]) -> tuple[int, int] | str:
    """What makes two paths one file: its device and inode (so hard links and symbolic links agree), or the
    resolved path where the file cannot be reached (missing, a broken link), so two spellings of it still agree."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return st.st_dev, st.st_ino


def collect_folder(root: str | os.PathLike[str]) -> tuple[list[Clip], list[dict[str, str]]]:
    """Clips (paths relative to ``root``, links followed) and the entries that are no recording of a species:
    ``hidden``, ``no_label``, ``link_loop`` (a link to a folder above it) and ``duplicate`` (a file reached again
    through a symbolic link or a hard link; the path without symbolic links, else the first in order, is used).

    Links to nothing stay clips, so that :func:`check_file` reports them under ``data.on_error`` like any file
    that cannot be decoded.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data.path: {root} is not a folder (data.source: folder expects species sub-folders)")
    files, unlabelled = walk(root)
    clips: list[Clip] = []
    used: dict[tuple[int, int] | str, tuple[str, str]] = {}  # file_key -> (path used, its real path)
    real_root = os.path.realpath(root)
    # paths without links first: of two ways to one file, the link is the one reported as the duplicate
    for rel, real in sorted(files, key=lambda f: (f[1] != os.path.join(real_root, f[0]), f[0])):
        parts = rel.split("/")
        if any(part.startswith(".") for part in parts):
            unlabelled.append({"path": rel, "reason": "hidden", "detail": "hidden file or folder"})
        elif len(parts) < 2:
            unlabelled.append({"path": rel, "reason": "no_label", "detail": "not inside a species folder"})
        elif real and file_key(real) in used:
            first, first_real = used[file_key(real)]
            how = "through a symbolic link" if real == first_real else "a hard link to it"
            detail = f"the same file as {first} ({how}); each file is used once"
            unlabelled.append({"path": rel, "label": parts[0], "reason": "duplicate", "detail": detail})
        else:
            if real:
                used[file_key(real)] = (rel, real)
            clips.append(Clip(rel, parts[0], rel))
    return sorted(clips, key=lambda c: c.path), unlabelled


def walk(root: Path) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """``(path relative to root, real path)`` of every file under ``root``, links to folders followed, and the
    links to a folder that contains them (followed, they would repeat forever). A link to nothing is listed as a
    file with an empty real path."""
    files, loops = [], []
    pending = [(root, (os.path.realpath(root),))]  # a folder, and the real paths of it and the folders above it
    while pending:
        folder, above = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = Path(entry.path).relative_to(root).as_posix()
                _check_name(entry.path)
                if not entry.is_symlink():  # no need to ask the file system again for most entries
                    real = os.path.join(above[-1], entry.name)
                else:
                    real = os.path.realpath(entry.path) if os.path.exists(entry.path) else ""
                if not real or not entry.is_dir():
                    files.append((rel, real))
                elif real in above:
                    detail = f"a symbolic link to {real}, a folder that contains it; its files are listed once"
                    loops.append({"path": rel, "reason": "link_loop", "detail": detail})
                else:
                    pending.append((Path(entry.path), (*above, real)))
    return files, loops


def _check_name(path: str) -> None:
    """A name the file system gave with bytes that are not UTF-8 (``os`` keeps them as surrogates) is refused
    here, by name, rather than by a codec error wherever it is first written."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise ValueError(f"{shown}: the name is not UTF-8 (bytes shown as \\xNN); rename it") from None


def collect_csv(
    csv_path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> tuple[list[Clip], list[dict[str, str]]]:
    """Clips from a CSV (paths as written, relative to the CSV's folder; splits normalised to train/val/test) and
    the rows that list a file already listed (each file is used once; the repeats are reported as skipped).

    One file listed with two labels, splits or recordings is an error naming both lines: keeping either would
    guess, and keeping both would put one recording in two splits. With ``root`` (``data.path``), a row naming a
    file outside it is an error naming the line.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ValueError(f"data.path: {csv_path} is not a file (data.source: csv expects a CSV)")
    try:
        rows = _read_csv(csv_path)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{csv_path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    if root is not None:
        _check_inside(csv_path, rows, Path(root))
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


def _check_inside(csv_path: Path, rows: list[tuple[int, Clip]], root: Path) -> None:
    """Paths are judged as written (``..`` folded, links not followed): DVC hashes data.path through its links,
    so a link inside it to a file elsewhere is watched, while a path that leaves it is not."""
    top = os.path.abspath(root)
    for line, clip in rows:
        where = os.path.abspath(csv_path.parent / clip.path)
        if os.path.commonpath([top, where]) != top:
            raise ValueError(
                f"{csv_path}:{line}: {clip.path!r} lies outside data.path ({root}), which DVC watches for "
                "changes; move the file inside it or set data.path to a folder that holds both"
            )


def _once_each(csv_path: Path, rows: list[tuple[int, Clip]]) -> tuple[list[Clip], list[dict[str, str]]]:
    """Each file once, however spelled (:func:`file_key`); repeats reported as ``duplicate``, contradictory rows
    an error."""
    first: dict[tuple[int, int] | str, tuple[int, Clip]] = {}
    clips, duplicates = [], []
    for line, clip in rows:
        key = file_key(csv_path.parent / clip.path)
        if key not in first:
            first[key] = (line, clip)
            clips.append(clip)
            continue
        line0, clip0 = first[key]
        spelled_alike = posixpath.normpath(clip.path) == posixpath.normpath(clip0.path)
        if _as_recording(clip0) != _as_recording(clip):
            named = repr(clip.path) if spelled_alike else f"{clip0.path!r} and {clip.path!r}, one file,"
            raise ValueError(
                f"{csv_path}: lines {line0} and {line} list {named} as {_describe(clip0)} and as "
                f"{_describe(clip)}; a file has one species, one split and one recording"
            )
        where = f"repeats line {line0}" if spelled_alike else f"the same file as {clip0.path!r} on line {line0}"
        detail = f"{where} of {csv_path.name} (line {line}); the file is used once"
        duplicates.append({"path": clip.path, "label": clip.label, "reason": "duplicate", "detail": detail})
    return clips, duplicates


def _as_recording(clip: Clip) -> tuple[str, str, str | None]:
    recording = None if clip.recording_id == clip.path else clip.recording_id  # None: the file is its recording
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
