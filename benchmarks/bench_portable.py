"""What portable mode (``train.precision: portable``) costs: a real Trainer epoch of AudioCNN in it against the
default (``auto``: bf16 where the CPU has it, oneDNN, every core).

The pins are per process (ATen and MKL read them once), so each epoch runs in a fresh process, the two modes
alternating round by round; each process trains one warm-up epoch, then the timed one. The ratio is the median of
the per-round ratios.

    python benchmarks/bench_portable.py            # the comparison, printed as JSON
    python benchmarks/bench_portable.py --child portable   # one process's epoch seconds (what the comparison runs)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np

SAMPLES = 256


def child(precision: str) -> float:
    """Seconds of the second of two Trainer epochs on fixed random data, in ``precision``."""
    from speciesclf.models.cnn import build_model
    from speciesclf.portable import pin
    from speciesclf.training.config import TrainConfig
    from speciesclf.training.trainer import Trainer

    pin(precision)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SAMPLES, 20, 500)).astype(np.float32)
    y = rng.integers(0, 89, SAMPLES)
    config = TrainConfig(epochs=2, warmup_epochs=0, precision=precision, seed=0)
    result = Trainer(build_model("AudioCNN", 89), config=config, log=None).fit(x, y, None, None)
    return result.history[-1].seconds


def bench_portable(rounds: int = 3) -> dict[str, float | int]:
    seconds: dict[str, list[float]] = {"auto": [], "portable": []}
    for _ in range(rounds):
        for precision in seconds:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", precision]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            seconds[precision].append(float(out.stdout.split()[-1]))
    ratios = [p / a for p, a in zip(seconds["portable"], seconds["auto"], strict=True)]
    return {
        "samples": SAMPLES,
        "rounds": rounds,
        "auto_samples_per_s": round(SAMPLES / statistics.median(seconds["auto"]), 1),
        "portable_samples_per_s": round(SAMPLES / statistics.median(seconds["portable"]), 1),
        "slowdown": round(statistics.median(ratios), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", choices=["auto", "portable"], help="time one epoch in this process")
    args = parser.parse_args()
    if args.child:
        print(f"{child(args.child):.4f}")
    else:
        print(json.dumps(bench_portable(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
