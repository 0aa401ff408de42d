"""Manifests and splits: which recording each clip comes from, and which split each recording goes to.

A manifest is a CSV with ``path,label,recording_id,split`` (``split`` may be empty before :func:`assign_splits`).
Splits are made per species and by recording, so no recording lends windows to two splits: a model evaluated on a
recording it was trained on would look better than it is.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from speciesclf.files import write_csv

__all__ = ["SPLITS", "Clip", "assign_splits", "read_manifest", "write_manifest"]

SPLITS = ("train", "val", "test")
FIELDS = ("path", "label", "recording_id", "split")


@dataclass(frozen=True)
class Clip:
    """One audio file of a species; ``recording_id`` groups files cut from the same recording."""

    path: str
    label: str
    recording_id: str
    split: str = ""


def read_manifest(path: str | os.PathLike[str]) -> list[Clip]:
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected {', '.join(FIELDS)}")
        return [
            Clip(row["path"], row["label"], row.get("recording_id") or row["path"], row.get("split") or "")
            for row in reader
        ]


def write_manifest(path: str | os.PathLike[str], clips: Iterable[Clip]) -> None:
    write_csv(path, FIELDS, ((c.path, c.label, c.recording_id, c.split) for c in clips))


def _split_sizes(n_recordings: int, val: float, test: float) -> tuple[int, int]:
    """Recordings for (val, test): at least one each, and at least one left for training."""
    n_val = max(1, round(n_recordings * val))
    n_test = max(1, round(n_recordings * test))
    while n_val + n_test > n_recordings - 1:
        if n_test >= n_val and n_test > 1:
            n_test -= 1
        elif n_val > 1:
            n_val -= 1
        else:
            break
    return n_val, n_test


def assign_splits(clips: Sequence[Clip], val: float, test: float, seed: int) -> list[Clip]:
    """Seeded split by recording, stratified by species: every species gets >= 1 recording in each split.

    Each species needs at least 3 recordings (the caller drops the others, with a reason). Clips that already
    carry a split keep it; the rest of their species is split as above.
    """
    by_species: dict[str, list[str]] = defaultdict(list)
    for c in clips:
        if not c.split and c.recording_id not in by_species[c.label]:
            by_species[c.label].append(c.recording_id)
    chosen: dict[tuple[str, str], str] = {}
    rng = np.random.default_rng(seed)
    for label in sorted(by_species):
        recs = sorted(by_species[label])
        if not recs:
            continue
        if len(recs) < 3:
            raise ValueError(f"species {label!r} has {len(recs)} recording(s); a split needs at least 3")
        order = [recs[i] for i in rng.permutation(len(recs))]
        n_val, n_test = _split_sizes(len(recs), val, test)
        for i, rec in enumerate(order):
            chosen[label, rec] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return [c if c.split else replace(c, split=chosen[c.label, c.recording_id]) for c in clips]
