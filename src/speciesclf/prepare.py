"""Stage logic of `prepare`: gather labelled recordings, check every file, split by recording, account for all.

Sources (``data.source``): ``synthetic`` generates the embedded dataset into ``<out>/audio``; ``folder`` and ``csv``
read a collection in place (see :mod:`speciesclf.sources`). ``<out>/manifest.csv`` lists the usable clips with
their split, paths relative to ``<out>``; ``<out>/report.json`` lists every input file, used (with its split and
number of windows) or skipped with a reason, so nothing the user gave disappears silently.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from speciesclf.audio import window_starts
from speciesclf.data import Clip, assign_splits, read_manifest, write_manifest
from speciesclf.io import atomic_dir, write_json
from speciesclf.sources import check_file, collect_csv, collect_folder

__all__ = ["prepare"]


def _synthetic(params: dict[str, Any], out: Path) -> list[Clip]:
    from speciesclf.synth import SynthConfig, generate  # only the synthetic source needs the generator

    s = params["synthetic"]
    cfg = SynthConfig(**{**s, "snr_db": tuple(s["snr_db"])}, seed=params["seed"])
    return read_manifest(generate(cfg, out))


def _windows(seconds: float, orig_sr: int, split: str, features: dict[str, Any]) -> int:
    sr = features["sample_rate"]
    hop = features["train_hop_seconds"] if split == "train" else features["clip_seconds"]
    n = -(-round(seconds * orig_sr) * sr // orig_sr)  # samples after resampling (torchaudio rounds the length up)
    return len(window_starts(n, round(features["clip_seconds"] * sr), max(1, round(hop * sr))))


def prepare(params: dict[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Build ``out_dir`` whole; returns the report. Raises ValueError when nothing usable remains."""
    data, out_dir = params["data"], Path(out_dir)
    with atomic_dir(out_dir) as out:
        entries: list[dict[str, Any]] = []
        if data["source"] == "synthetic":
            clips, base = _synthetic(params, out), out
        elif data["source"] == "folder":
            base = Path(data["path"])
            clips, unlabelled = collect_folder(base)
            entries += [{**u, "status": "skipped"} for u in unlabelled]
        else:
            csv_path = Path(data["path"]) / data["csv"]
            base = csv_path.parent
            clips = collect_csv(csv_path)

        # 1. every file decodes to finite, non-silent audio
        usable: list[Clip] = []
        seconds: dict[str, float] = {}
        rates: dict[str, int] = {}
        for clip in clips:
            check = check_file(base / clip.path)
            if not check.ok:
                if data["on_error"] == "fail":
                    raise ValueError(f"{base / clip.path}: {check.reason} ({check.detail}); data.on_error is 'fail'")
                entries.append({"path": clip.path, "label": clip.label, "status": "skipped", "reason": check.reason,
                                "detail": check.detail})  # fmt: skip
                continue
            if clip.split == "?":
                entries.append({"path": clip.path, "label": clip.label, "status": "skipped", "reason": "no_split",
                                "detail": "the CSV gives splits, but none for this file"})  # fmt: skip
                continue
            usable.append(clip)
            seconds[clip.path] = check.seconds
            rates[clip.path] = check.sample_rate

        # 2. every species can be split (or, with given splits, was trained on)
        usable, label_skips = _splittable(usable, data["min_recordings"])
        entries += label_skips
        split = params["split"]
        usable = assign_splits(usable, split["val"], split["test"], split["seed"])
        if not usable:
            why = ", ".join(f"{n} {r}" for r, n in sorted(Counter(e["reason"] for e in entries).items()))
            found = f"all {len(entries)} file(s) skipped ({why})" if entries else "no files found"
            raise ValueError(f"no usable recordings in {data['path']}: {found}")

        rel = Path(os.path.relpath(base.resolve(), out_dir.resolve())) if data["source"] != "synthetic" else Path()
        write_manifest(out / "manifest.csv", [Clip((rel / c.path).as_posix(), c.label, c.recording_id, c.split)
                                              for c in usable])  # fmt: skip
        feats = params["features"]
        entries += [{"path": c.path, "label": c.label, "status": "used", "split": c.split,
                     "recording_id": c.recording_id, "seconds": round(seconds[c.path], 3),
                     "windows": _windows(seconds[c.path], rates[c.path], c.split, feats)} for c in usable]  # fmt: skip
        entries.sort(key=lambda e: e["path"])
        skipped = Counter(e["reason"] for e in entries if e["status"] == "skipped")
        report = {
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
        write_json(out / "report.json", report)
    print(f"prepare: {report['n_used']} of {report['n_files']} files used, {report['n_species']} species, "
          f"recordings per split {report['splits']}")  # fmt: skip
    for reason, n in report["skipped"].items():
        first = next(e for e in entries if e.get("reason") == reason)
        print(f"prepare: skipped {n} file(s): {reason} (e.g. {first['path']}: {first.get('detail', '')})")
    return report


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
        skipped.append({"path": c.path, "label": c.label, "status": "skipped", "reason": reason, "detail": detail})
    return keep, skipped
