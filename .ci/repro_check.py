"""Reproducibility check for CI: run the whole default pipeline in this (fresh) clone, then prove

1. `dvc status` is clean (dvc.lock matches code, params and outputs);
2. every committed metric is reproduced: exactly when dvc.lock's hashes equal the committed ones (same machine
   kind), otherwise within TOLERANCE (float results of a training run differ across CPU models);
3. the wall-clock of the run, printed for the README.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

TOLERANCE = 0.05  # absolute, on fractions (accuracy, F1): a 168-clip test split moves ~0.006 per clip
SKIP = {"train_seconds", "seconds_per_epoch", "peak_memory_mb"}  # wall-clock and memory: never reproducible


def git_show(path: str) -> str | None:
    r = subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def flatten(obj: object, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        out[prefix.rstrip(".")] = float(obj)
    return out


def main() -> int:
    files = sorted(
        p.as_posix() for p in Path("metrics").rglob("*.json") if "eval" not in p.parts and "train" not in p.parts
    )
    committed = {f: git_show(f) for f in files}
    lock_before = git_show("dvc.lock")
    t0 = time.perf_counter()
    subprocess.run(["dvc", "repro"], check=True)
    seconds = time.perf_counter() - t0
    status = subprocess.run(["dvc", "status", "--json", "dvc.yaml"], capture_output=True, text=True, check=True).stdout
    problems = []
    if json.loads(status or "{}"):
        problems.append(f"dvc status not clean after repro: {status.strip()}")
    same_lock = Path("dvc.lock").read_text() == lock_before
    for f, text in committed.items():
        if text is None:
            continue
        old, new = flatten(json.loads(text)), flatten(json.loads(Path(f).read_text()))
        for key, value in old.items():
            if key.split(".")[-1] in SKIP:
                continue
            tol = 0.0 if same_lock else TOLERANCE
            if key not in new or abs(new[key] - value) > tol + 1e-12:
                problems.append(f"{f}: {key} committed {value} reproduced {new.get(key)} (tolerance {tol})")
    print(f"repro-check: pipeline {seconds:.0f} s; dvc.lock {'identical to' if same_lock else 'differs from'} "
          f"the committed one; {len(files)} metrics files compared")  # fmt: skip
    for p in problems:
        print(f"repro-check: FAIL {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
