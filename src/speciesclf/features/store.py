"""The feature store: feature windows (MFCC, log-mel or PCEN) of every clip of a split manifest as a few arrays
per split (``featurize``), read back standardised by training and evaluation (:class:`FeatureStore`, the one
code that knows the folder's files).

Layout of ``data/features/``: per split ``<split>_x.npy`` (float32 ``(windows, bands, frames)``, not yet
standardised, memory-mappable), ``<split>_y.npy`` (int64 species index) and ``<split>_windows.csv`` (the recording
of each window); ``labels.json`` (species and training counts), ``norm.json`` (training-split statistics only),
``features.json`` (the feature settings); for BirdNET embeddings also ``pretrained.json`` (the model file, its
package version and checksum).
"""

from __future__ import annotations

import csv
import functools
import multiprocessing
import os
import signal
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speciesclf import processes
from speciesclf.data.audio import load_mono, windows
from speciesclf.data.manifest import SPLITS, Clip, read_manifest
from speciesclf.features.birdnet import pretrained
from speciesclf.features.config import FeatureConfig, Standardizer
from speciesclf.features.frontends import Extractor, extractor
from speciesclf.files import read_json, save_npy, write_csv, write_json
from speciesclf.progress import progress

__all__ = ["FeatureStore", "StoreFacts", "featurize", "recording_features"]

_FEATURES = "features.json"  # the feature settings: a folder with them holds a feature store
_NORM = "norm.json"  # the training split's per-band statistics
_LABELS = "labels.json"  # the species (in index order) and the training windows of each
_PRETRAINED = "pretrained.json"  # a pretrained front end's name, version and checksum (BirdNET's features only)


@functools.lru_cache(maxsize=4)
def _extractor(config: FeatureConfig) -> Extractor:
    return extractor(config)


def _recording_windows(path: Path, config: FeatureConfig, hop: int) -> np.ndarray:
    """Decode, resample, cut and featurize one recording: ``(windows, bands, frames)``.

    Always on one intra-op thread, in a worker or not, so the bytes do not depend on how many workers ran.
    """
    wave = load_mono(path, config.read_rate)
    extract = _extractor(config)
    clips = windows(wave, config.clip_samples, hop)
    if getattr(extract, "batched", False):  # a pretrained network: one call per recording, not per window
        return extract(clips)
    return np.stack([extract(w) for w in clips])


def _worker_init() -> None:
    torch.set_num_threads(1)  # as DataLoader workers do: processes, not threads, share the cores
    processes.ignore_interrupts()  # Ctrl-C and SIGTERM are the stage's to handle: it shuts the pool down
    processes.die_with_parent(signal.SIGKILL)  # a stage killed outright takes its workers with it


def _map_recordings(jobs: Sequence[tuple[Path, int]], config: FeatureConfig, workers: int) -> Iterator[np.ndarray]:
    """Per-recording features in input order; decoding and resampling spread over ``workers`` processes."""
    if workers <= 1 or len(jobs) < 2 * workers:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield from (_recording_windows(path, config, hop) for path, hop in jobs)
        finally:
            torch.set_num_threads(threads)
        return
    # fork: workers start in milliseconds and inherit the imported modules (spawn would re-import torch each)
    ctx = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init)
    try:
        paths, hops = zip(*jobs, strict=True)
        yield from pool.map(_recording_windows, paths, [config] * len(jobs), hops, chunksize=4)
    except BrokenProcessPool as exc:
        raise ChildProcessError("a featurize worker process died (killed, or out of memory)") from exc
    except BaseException:
        # an error, Ctrl-C or SIGTERM: a worker inside a long native call (resampling a long recording) would not
        # look at a request to stop until the call returns, minutes later: kill it; its result is not wanted
        for worker in list(pool._processes.values()):  # the executor has no public way to kill
            worker.kill()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def featurize(
    manifest: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: FeatureConfig,
    workers: int | None = None,
) -> dict[str, int]:
    """Feature windows (``config.front_end``) of every clip in a split manifest; paths are relative to the
    manifest's folder.

    Training recordings are cut with ``config.train_hop_seconds`` (overlap = augmentation); val/test recordings
    with a hop of one clip, so each part of a recording is scored once. ``workers`` processes decode and resample
    (default: one per core); the result is byte-identical for any number. Returns windows per split.
    """
    manifest, store = Path(manifest), FeatureStore(out_dir)
    clips = read_manifest(manifest)
    species = sorted({c.label for c in clips if c.split == "train"})
    index = {label: i for i, label in enumerate(species)}
    train_counts = [0] * len(species)
    workers = (os.cpu_count() or 1) if workers is None else workers
    counts: dict[str, int] = {}
    for split in SPLITS:
        split_clips = [c for c in clips if c.split == split]
        for clip in split_clips:
            if clip.label not in index:
                raise ValueError(f"{manifest}: species {clip.label!r} is in {split} but not in train")
        x, y = _featurize_split(split, split_clips, manifest.parent, index, config, workers, store)
        counts[split] = len(y)
        if split == "train":
            train_counts = np.bincount(y, minlength=len(species)).tolist()
            store.write_norm(Standardizer.fit(x))
    store.write_facts(species, train_counts, config)
    return counts


def recording_features(
    paths: Sequence[Path], config: FeatureConfig, hop_seconds: float, label: str, workers: int | None = None
) -> list[np.ndarray]:
    """Each recording's feature windows ``(windows, bands, frames)``, not standardised, cut every ``hop_seconds``
    (a store's training windows with ``train_hop_seconds``, its scored ones with ``clip_seconds``); ``label`` names
    the work in the progress line."""
    hop = max(1, round(hop_seconds * config.sample_rate))
    workers = (os.cpu_count() or 1) if workers is None else workers
    jobs = [(Path(p), hop) for p in paths]
    return list(progress(_map_recordings(jobs, config, workers), label, "recording", total=len(jobs)))


def _featurize_split(
    split: str,
    clips: list[Clip],
    base: Path,
    index: dict[str, int],
    config: FeatureConfig,
    workers: int,
    store: FeatureStore,
) -> tuple[np.ndarray, np.ndarray]:
    """Featurize and write one split's windows; returns the features and labels."""
    hop_seconds = config.train_hop_seconds if split == "train" else config.clip_seconds
    hop = max(1, round(hop_seconds * config.sample_rate))
    feats, ys, rows = [], [], []
    jobs = [(_resolve(base, c.path), hop) for c in clips]
    done = progress(_map_recordings(jobs, config, workers), f"featurize {split}", "recording", total=len(jobs))
    for clip, f in zip(clips, done, strict=True):
        feats.append(f)
        ys += [index[clip.label]] * len(f)
        rows += [(clip.recording_id, clip.path, k) for k in range(len(f))]
    x = np.concatenate(feats) if feats else np.zeros((0, config.bands, config.frames), np.float32)
    y = np.asarray(ys, dtype=np.int64)
    store.write_split(split, x, y, rows)
    return x, y


def _resolve(base: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


@dataclass(frozen=True)
class StoreFacts:
    """What a model's card records of the features it learnt from: species, training windows per species, the
    feature settings and normalisation (as written) and the pretrained model behind the features (if any). Read
    from a store (:attr:`FeatureStore.facts`), or made for windows featurized in memory (``select``)."""

    species: list[str]
    train_counts: list[int]
    features: dict[str, Any]
    norm: dict[str, Any]
    pretrained: dict[str, Any] | None = None


class FeatureStore:
    """A feature store's folder; the one reader and writer of its files (layout: this module's docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        """Whether the folder holds a feature store (its settings file)."""
        return (self.path / _FEATURES).is_file()

    @functools.cached_property
    def features(self) -> dict[str, Any]:
        """The feature settings as written (a model's card keeps them so; compared with a card's as they are)."""
        return read_json(self.path / _FEATURES)

    @property
    def config(self) -> FeatureConfig:
        return FeatureConfig.from_dict(self.features)

    @functools.cached_property
    def _labels(self) -> dict[str, Any]:
        return read_json(self.path / _LABELS)

    @property
    def species(self) -> list[str]:
        """The species, in the order of their indices."""
        return self._labels["species"]

    @functools.cached_property
    def _norm(self) -> dict[str, Any]:
        return read_json(self.path / _NORM)

    @property
    def norm(self) -> Standardizer:
        """The training split's standardisation, applied to every split."""
        return Standardizer.from_dict(self._norm)

    @property
    def facts(self) -> StoreFacts:
        pretrained_file = self.path / _PRETRAINED
        return StoreFacts(
            self.species,
            self._labels["train_counts"],
            self.features,
            self._norm,
            read_json(pretrained_file) if pretrained_file.exists() else None,
        )

    def load_split(self, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Standardised features, labels and the recording id of each window of one split."""
        x = self.norm(np.load(self.path / f"{split}_x.npy", mmap_mode="r"))
        y = np.load(self.path / f"{split}_y.npy")
        recordings = [row["recording_id"] for row in self._windows(split)]
        return x, y, recordings

    def window_positions(self, split: str) -> tuple[list[str], list[int]]:
        """The audio file of each window of one split and the window's position in it (0 = the file's first)."""
        rows = self._windows(split)
        return [row["path"] for row in rows], [int(row["window"]) for row in rows]

    def _windows(self, split: str) -> list[dict[str, str]]:
        with open(self.path / f"{split}_windows.csv", newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def write_split(self, split: str, x: np.ndarray, y: np.ndarray, rows: Iterable[tuple[str, str, int]]) -> None:
        """One split's features, labels, and each window's recording id, audio file and position in it."""
        save_npy(self.path / f"{split}_x.npy", x)
        save_npy(self.path / f"{split}_y.npy", y)
        write_csv(self.path / f"{split}_windows.csv", ("recording_id", "path", "window"), rows)

    def write_norm(self, norm: Standardizer) -> None:
        write_json(self.path / _NORM, norm.to_dict())

    def write_facts(self, species: list[str], train_counts: list[int], config: FeatureConfig) -> None:
        """The species and their training windows, the settings, and which pretrained model made the features."""
        write_json(self.path / _LABELS, {"species": species, "train_counts": train_counts})
        write_json(self.path / _FEATURES, config.to_dict())
        if config.front_end == "birdnet":  # which pretrained model made them, for each model's card
            write_json(self.path / _PRETRAINED, pretrained())
