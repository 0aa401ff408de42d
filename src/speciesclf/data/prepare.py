"""Stage logic of `prepare`: gather labelled recordings, check every file, split by recording, account for all.

Sources (``data.source``): ``synthetic`` generates the embedded dataset into ``<out>/audio``; ``folder`` and ``csv``
read a collection in place (see :mod:`speciesclf.data.sources`). ``<out>/manifest.csv`` lists the usable clips with
their split, paths relative to ``<out>``; ``<out>/report.json`` lists every input file, used (with its split and
number of windows) or skipped with a reason, so nothing the user gave disappears silently.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from speciesclf.data.audio import resampled_length, window_starts
from speciesclf.data.manifest import SPLITS, Clip, assign_splits, read_manifest, write_manifest
from speciesclf.data.sources import FileCheck, check_file, collect_csv, collect_folder
from speciesclf.features.config import FeatureConfig
from speciesclf.files import atomic_dir, write_json
from speciesclf.progress import progress

__all__ = ["prepare"]


def _collect(params: dict[str, Any], out: Path) -> tuple[list[Clip], Path, list[dict[str, Any]]]:
    """The labelled clips of the source, the folder their paths are relative to, and files that name no species."""
    data = params["data"]
    if data["source"] == "synthetic":
        from speciesclf.data.synth import SynthConfig, generate  # only the synthetic source needs the generator

        return read_manifest(generate(SynthConfig.from_params(params), out)), out, []
    if data["source"] == "folder":
        base = Path(data["path"])
        clips, unlabelled = collect_folder(base)
        return clips, base, [{**u, "status": "skipped"} for u in unlabelled]
    csv_path = Path(data["path"]) / data["csv"]
    clips, duplicates = collect_csv(csv_path, root=data["path"])
    return clips, csv_path.parent, [{**d, "status": "skipped"} for d in duplicates]


def _skip(clip: Clip, reason: str, detail: str) -> dict[str, Any]:
    return {"path": clip.path, "label": clip.label, "status": "skipped", "reason": reason, "detail": detail}


def _check_files(
    clips: list[Clip], base: Path, on_error: str
) -> tuple[list[Clip], dict[str, FileCheck], list[dict[str, Any]]]:
    """Decode every file: the usable clips, their checks, and the skipped ones with a reason each."""
    usable, checks, skipped = [], {}, []
    for clip in progress(clips, "prepare: decode", "file"):
        check = check_file(base / clip.path)
        if not check.ok:
            if on_error == "fail":
                raise ValueError(f"{base / clip.path}: {check.reason} ({check.detail}); data.on_error is 'fail'")
            skipped.append(_skip(clip, check.reason, check.detail))
        elif clip.split == "?":
            skipped.append(_skip(clip, "no_split", "the CSV gives splits, but none for this file"))
        else:
            usable.append(clip)
            checks[clip.path] = check
    return usable, checks, skipped


def _windows(check: FileCheck, split: str, features: dict[str, Any]) -> int:
    """How many windows featurize will cut from a recording of this split."""
    config = FeatureConfig(**features)
    hop = config.train_hop_seconds if split == "train" else config.clip_seconds
    n = resampled_length(round(check.seconds * check.sample_rate), check.sample_rate, config.read_rate)
    return len(window_starts(n, config.clip_samples, max(1, round(hop * config.sample_rate))))


def _used(clip: Clip, check: FileCheck, features: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": clip.path,
        "label": clip.label,
        "status": "used",
        "split": clip.split,
        "recording_id": clip.recording_id,
        "seconds": round(check.seconds, 3),
        "windows": _windows(check, clip.split, features),
    }


def prepare(params: dict[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Build ``out_dir`` whole; returns the report. Raises ValueError when nothing usable remains."""
    data, out_dir = params["data"], Path(out_dir)
    with atomic_dir(out_dir) as out:
        clips, base, entries = _collect(params, out)
        usable, checks, skipped = _check_files(clips, base, data["on_error"])  # 1. every file decodes
        usable, unsplittable = _splittable(usable, data["min_recordings"])  # 2. every species can be split
        entries += skipped + unsplittable
        split = params["split"]
        usable = assign_splits(usable, split["val"], split["test"], split["seed"])
        if not usable:
            raise ValueError(_nothing_usable(data["path"], entries))
        _check_trainable(data["path"], usable)
        prefix = _manifest_prefix(base, out_dir) if data["source"] != "synthetic" else Path()
        write_manifest(out / "manifest.csv", [replace(c, path=(prefix / c.path).as_posix()) for c in usable])
        entries += [_used(c, checks[c.path], params["features"]) for c in usable]
        report = _report(data, usable, entries)
        write_json(out / "report.json", report)
    _print_summary(report)
    return report


def _manifest_prefix(base: Path, out_dir: Path) -> Path:
    """What the manifest puts before a recording's path inside the collection, so that featurize finds it from
    ``out_dir``: the collection relative to ``out_dir`` when it lies inside the working directory (the repository,
    where a stage runs; an experiment copies both, so the relative path holds in the copy), its absolute path when
    it lies outside (every copy reads it in place: a relative path from a copy at another depth would miss it)."""
    base = base.resolve()
    if base.is_relative_to(Path.cwd().resolve()):
        return Path(os.path.relpath(base, out_dir.resolve()))
    return base


def _check_trainable(path: str, usable: list[Clip]) -> None:
    """Fail here, not hours later in training: a classifier needs two species, training and validation
    recordings, and evaluation a test split."""
    species = sorted({c.label for c in usable})
    if len(species) < 2:
        raise ValueError(f"{path}: only one usable species ({species[0]!r}); a classifier needs at least two")
    splits = Counter(c.split for c in usable)
    for split in SPLITS:
        if not splits[split]:
            given = ", ".join(f"{n} {s}" for s, n in sorted(splits.items()))
            raise ValueError(f"{path}: no usable recording in the {split} split ({given}); every split needs some")


def _nothing_usable(path: str, entries: list[dict[str, Any]]) -> str:
    why = ", ".join(f"{n} {r}" for r, n in sorted(Counter(e["reason"] for e in entries).items()))
    found = f"all {len(entries)} file(s) skipped ({why})" if entries else "no files found"
    return f"no usable recordings in {path}: {found}"


def _report(data: dict[str, Any], usable: list[Clip], entries: list[dict[str, Any]]) -> dict[str, Any]:
    entries.sort(key=lambda e: e["path"])
    skipped = Counter(e["reason"] for e in entries if e["status"] == "skipped")
    return {
        "source": data["source"],
        "path": data["path"] if data["source"] != "synthetic" else None,
        "n_files": len(entries),
        "n_used": len(usable),
        "n_skipped": sum(skipped.values()),
        "n_species": len({c.label for c in usable}),
        "splits": dict(sorted(Counter(c.split for c in usable).items())),
        "skipped": dict(sorted(skipped.items())),
        "files": entries,
    }


def _print_summary(report: dict[str, Any]) -> None:
    print(
        f"prepare: {report['n_used']} of {report['n_files']} files used, {report['n_species']} species, "
        f"recordings per split {report['splits']}"
    )
    for reason, n in report["skipped"].items():
        first = next(e for e in report["files"] if e.get("reason") == reason)
        print(f"prepare: skipped {n} file(s): {reason} (e.g. {first['path']}: {first.get('detail', '')})")


def _splittable(clips: list[Clip], min_recordings: int) -> tuple[list[Clip], list[dict[str, Any]]]:
    """Drop species that cannot be split (too few recordings) or, with given splits, never appear in train."""
    recordings: dict[str, set[str]] = defaultdict(set)
    trained = {c.label for c in clips if c.split == "train"}
    for c in clips:
        if not c.split:
            recordings[c.label].add(c.recording_id)
    keep, skipped = [], []
    for c in clips:
        if not c.split and len(recordings[c.label]) < min_recordings:
            reason = "too_few_recordings"
            detail = f"{len(recordings[c.label])} recording(s) of {c.label!r}; a split needs {min_recordings}"
        elif c.split and c.split != "train" and c.label not in trained:
            reason, detail = "label_not_in_train", f"{c.label!r} has no recording in the training split"
        else:
            keep.append(c)
            continue
        skipped.append(_skip(c, reason, detail))
    return keep, skipped
