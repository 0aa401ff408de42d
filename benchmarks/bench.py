"""`make bench`: speed of the pipeline's own code against the usual way, measured in one run on one machine.

- featurize: end-to-end clips/s of the featurize stage's code (decode + resample + MFCC + write) against librosa
  doing the same work one clip at a time;
- train.<model>: samples/s of a real Trainer epoch against (a) the ceiling — a bare forward/backward/step loop over
  a resident tensor with the same model, dtype, memory format and batch size — and (b) the usual way — a
  DataLoader over a per-sample Dataset, fp32, default settings;
- pipeline_seconds: the full default pipeline from an empty cache, `dvc repro` in a fresh clone of this commit;
  dvc_noop_seconds: `dvc repro` again there, with everything up to date (--no-pipeline: the no-op in this checkout).

Ratios are what to compare across machines; absolute numbers depend on the CPU. Results: benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speciesclf.features import FeatureConfig
from speciesclf.featurize import featurize
from speciesclf.io import write_json
from speciesclf.models import build_model
from speciesclf.training import TrainConfig, Trainer, resolve_precision

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict[str, object]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}  # fmt: skip


# -- featurize ------------------------------------------------------------------------------------------------
def bench_featurize(n_clips: int, source_sr: int) -> dict[str, float]:
    cfg = FeatureConfig()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for i in range(n_clips):  # 5 s recordings at another rate, so resampling is part of the work
            wave = 0.3 * rng.standard_normal(round(cfg.clip_seconds * source_sr)).astype(np.float32)
            sf.write(tmp / f"clip{i:04d}.flac", wave, source_sr, subtype="PCM_16")
            rows.append((f"clip{i:04d}.flac", f"sp{i % 4}", f"r{i}", "train"))
        with open(tmp / "manifest.csv", "w", newline="") as f:
            csv.writer(f).writerows([("path", "label", "recording_id", "split"), *rows])

        t0 = time.perf_counter()
        featurize(tmp / "manifest.csv", tmp / "features", cfg, cfg.clip_seconds)
        ours = time.perf_counter() - t0

        import librosa  # benchmark-only dependency (requirements-bench.txt)

        def librosa_mfcc(name: str) -> np.ndarray:
            y, sr = librosa.load(tmp / name, sr=cfg.sample_rate, mono=True)
            y = librosa.util.fix_length(y, size=cfg.clip_samples)
            m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=cfg.n_mfcc, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                     n_mels=cfg.n_mels, fmin=cfg.f_min)  # fmt: skip
            return m[:, : cfg.frames]

        librosa_mfcc(rows[0][0])  # warm-up: numba compiles librosa's kernels on first use; not librosa's steady pace
        t0 = time.perf_counter()
        feats = [librosa_mfcc(name) for name, *_ in rows]
        np.save(tmp / "librosa.npy", np.stack(feats))
        ref = time.perf_counter() - t0
    return {"clips": n_clips, "source_sample_rate": source_sr, "clips_per_s": n_clips / ours,
            "librosa_clips_per_s": n_clips / ref, "speedup_vs_librosa": ref / ours}  # fmt: skip


# -- training -------------------------------------------------------------------------------------------------
def _data(n: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 20, 500)).astype(np.float32), rng.integers(0, n_classes, n).astype(np.int64)


def _best_rate(one_pass: Callable[[], None], n: int, passes: int) -> float:
    """Samples/s of the fastest of ``passes`` calls of ``one_pass`` (each a full pass over ``n`` samples)."""
    best = 0.0
    for _ in range(passes):
        t0 = time.perf_counter()
        one_pass()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def ceiling(model_name: str, x: np.ndarray, y: np.ndarray, batch: int, dtype: torch.dtype | None, passes: int) -> float:
    """A bare loop: resident tensors, same model/dtype/memory format/batch, no validation, no bookkeeping.

    The best of ``passes`` full passes after two warm-up steps, as for the Trainer's epochs.
    """
    torch.manual_seed(0)
    model = build_model(model_name, int(y.max()) + 1).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step(idx: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = model(xt[idx])
        loss = torch.nn.functional.cross_entropy(out.float(), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def one_pass() -> None:
        for idx in torch.randperm(len(xt)).split(batch):
            step(idx)

    for idx in torch.randperm(len(xt))[: 2 * batch].split(batch):  # warm-up: oneDNN picks and caches kernels
        step(idx)
    return _best_rate(one_pass, len(xt), passes)


def dataloader_way(model_name: str, x: np.ndarray, y: np.ndarray, batch: int, passes: int) -> float:
    """The usual way: a per-sample Dataset, DataLoader defaults, fp32, contiguous memory format; best pass."""

    class Clips(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(x[i]), torch.tensor(y[i])

    torch.manual_seed(0)
    model = build_model(model_name, int(y.max()) + 1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(Clips(), batch_size=batch, shuffle=True)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def one_pass() -> None:
        for xb, yb in loader:
            step(xb, yb)

    for k, (xb, yb) in enumerate(loader):  # warm-up: two steps, as for the ceiling
        step(xb, yb)
        if k == 1:
            break
    return _best_rate(one_pass, len(x), passes)


def bench_train(model_name: str, n: int, batch: int = 32, passes: int = 3) -> dict[str, float | str]:
    """Best epoch of each way out of ``passes`` (after a warm-up epoch): on a shared 2-core machine a single epoch
    of a few hundred samples swings by 10-20 % from run to run, the best of several much less."""
    x, y = _data(n, 89)
    config = TrainConfig(epochs=1 + passes, batch_size=batch, warmup_epochs=0, patience=100, device="cpu", seed=0)
    trainer = Trainer(build_model(model_name, 89), config=config, log=None)
    result = trainer.fit(x, y, x[:batch], y[:batch])
    # a whole Trainer epoch, its validation pass (one batch) and best-weights bookkeeping included
    ours = max(n / h.seconds for h in result.history[1:])
    dtype = resolve_precision(config.precision, torch.device("cpu"))
    ceil = ceiling(model_name, x, y, batch, dtype, passes)
    usual = dataloader_way(model_name, x, y, batch, passes=1)  # 3x slower: one pass is precise enough
    return {"samples": n, "precision": result.precision, "samples_per_s": ours, "ceiling_samples_per_s": ceil,
            "fraction_of_ceiling": ours / ceil, "dataloader_samples_per_s": usual,
            "speedup_vs_dataloader": ours / usual}  # fmt: skip


# -- dvc ------------------------------------------------------------------------------------------------------
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
        if _dvc("status", "--json", cwd=ROOT).stdout.strip() not in ("{}", ""):
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
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    args = parser.parse_args()
    results: dict[str, object] = {"machine": machine()}
    results["featurize"] = bench_featurize(n_clips=160, source_sr=44100)
    results["train.AudioCNN"] = bench_train("AudioCNN", n=512)
    results["train.AudioCNNv2"] = bench_train("AudioCNNv2", n=256)
    results.update(bench_dvc(pipeline=not args.no_pipeline))
    write_json(args.out, results)
    print(f"machine: {results['machine']}")
    for key in ("featurize", "train.AudioCNN", "train.AudioCNNv2"):
        print(f"{key:18s} " + "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in results[key].items()))  # fmt: skip
    for key in ("dvc_noop_seconds", "pipeline_seconds", "pipeline_stages"):
        print(f"{key:18s} {results.get(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
