"""Detections in field recordings, and the tables field tools read.

A detection is a run of consecutive windows in which one species scores at or above its threshold: it begins where
the run's first window begins and ends where its last window ends (at most at the recording's end), with the run's
highest and mean score and its number of windows. Overlapping windows (``predict --hop``) make runs finer.

Tables are written with crowsetta (a maintained annotation library): a Raven Pro selection table (tab-separated:
Selection, View, Channel, Begin Time (s), End Time (s), Low Freq (Hz), High Freq (Hz), then Species, Score, Mean
Score, Windows; with Begin Path and Begin File when one table holds several recordings) and an Audacity label track
(start, end, ``species;score``). crowsetta and pandas are imported only when a table is written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speciesclf.files import atomic_path

__all__ = [
    "SUMMARY_COLUMNS",
    "Detection",
    "Detector",
    "read_raven",
    "recording_summary",
    "write_audacity",
    "write_raven",
]

SUMMARY_COLUMNS = ("path", "species", "detections", "seconds", "max_score")


@dataclass(frozen=True)
class Detection:
    path: str  # the recording
    species: str
    begin: float  # seconds of the recording
    end: float
    score: float  # the highest window score of the run
    mean_score: float
    windows: int


class Detector:
    """One recording's detections, fed its windows a batch at a time: only the runs still open are held.

    ``thresholds``: one per species (a species with an infinite threshold is never detected)."""

    def __init__(self, path: str, species: Sequence[str], thresholds: np.ndarray, clip_seconds: float) -> None:
        self.path, self.species, self.thresholds, self.clip = path, list(species), thresholds, clip_seconds
        self.open: dict[int, list[float]] = {}  # species -> [begin, last window's start, max, sum, windows]
        self.done: list[Detection] = []

    def add(self, starts: Sequence[float], proba: np.ndarray) -> None:
        for start, p in zip(starts, proba, strict=True):
            above = set(np.flatnonzero(p >= self.thresholds).tolist())
            for i in [i for i in self.open if i not in above]:
                self._close(i, None)
            for i in above:
                run = self.open.setdefault(i, [start, start, 0.0, 0.0, 0])
                run[1], run[2], run[3], run[4] = start, max(run[2], p[i]), run[3] + p[i], run[4] + 1

    def _close(self, i: int, duration: float | None) -> None:
        begin, last, top, total, n = self.open.pop(i)
        end = last + self.clip if duration is None else min(last + self.clip, duration)
        self.done.append(Detection(self.path, self.species[i], begin, end, top, total / n, int(n)))

    def finish(self, duration: float) -> list[Detection]:
        """Close the runs still open at the recording's end; every detection in order of time, then species."""
        for i in list(self.open):
            self._close(i, duration)
        return sorted(self.done, key=lambda d: (d.begin, d.end, d.species))


def read_raven(path: str | os.PathLike[str]) -> list[tuple[float, float, str]]:
    """The selections of a Raven table (as :func:`write_raven` writes, or Raven Pro saves): begin and end seconds
    and Species, read by crowsetta."""
    from crowsetta.formats.bbox import Raven

    df = Raven.from_file(Path(path), annot_col="Species").df
    return [(float(b), float(e), str(s)) for b, e, s in zip(df.begin_time_s, df.end_time_s, df.annotation, strict=True)]


def recording_summary(path: str, detections: Sequence[Detection]) -> list[tuple]:
    """A recording's rows of the summary table (:data:`SUMMARY_COLUMNS`): each species detected, its number of
    detections, their total seconds and the highest score; one row with no species when nothing was detected, so
    that every recording predicted is listed."""
    by_species: dict[str, list[Detection]] = {}
    for d in detections:
        by_species.setdefault(d.species, []).append(d)
    if not by_species:
        return [(path, "", 0, 0.0, "")]
    return [
        (path, name, len(ds), round(sum(d.end - d.begin for d in ds), 3), round(max(d.score for d in ds), 6))
        for name, ds in sorted(by_species.items())
    ]


def write_raven(
    path: str | os.PathLike[str],
    detections: Sequence[Detection],
    band: tuple[float, float],
    many: bool,
    scores: bool = True,
) -> None:
    """A Raven Pro selection table, written whole; ``band`` fills Low and High Freq (the model's band), ``many``
    adds Begin Path and Begin File for a table of several recordings; without ``scores``, Species alone follows
    the frequencies (a truth table)."""
    import pandas as pd
    from crowsetta.formats.bbox import Raven

    columns = {
        "Selection": list(range(1, len(detections) + 1)),
        "View": ["Spectrogram 1"] * len(detections),
        "Channel": [1] * len(detections),
        "begin_time_s": [round(d.begin, 6) for d in detections],
        "end_time_s": [round(d.end, 6) for d in detections],
        "low_freq_hz": [float(band[0])] * len(detections),
        "high_freq_hz": [float(band[1])] * len(detections),
        "annotation": [d.species for d in detections],
    }
    if scores:
        columns |= {
            "Score": [round(d.score, 6) for d in detections],
            "Mean Score": [round(d.mean_score, 6) for d in detections],
            "Windows": [d.windows for d in detections],
        }
    if many:
        columns |= {"Begin Path": [d.path for d in detections], "Begin File": [Path(d.path).name for d in detections]}
    table = Raven(df=pd.DataFrame(columns), annot_path=Path(path), annot_col="Species")
    with atomic_path(path, suffix=".txt") as tmp:  # crowsetta insists on the extension
        table.to_file(tmp)


def write_audacity(path: str | os.PathLike[str], detections: Sequence[Detection]) -> None:
    """An Audacity label track (one recording's), written whole: start, end, ``species;score``."""
    from crowsetta.formats.seq import AudSeq

    track = AudSeq(
        start_times=np.array([round(d.begin, 6) for d in detections], dtype=float),
        end_times=np.array([round(d.end, 6) for d in detections], dtype=float),
        labels=np.array([f"{d.species};{d.score:.4f}" for d in detections], dtype=object),
        annot_path=Path(path),
    )
    with atomic_path(path, suffix=".txt") as tmp:
        track.to_file(tmp)
