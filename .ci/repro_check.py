"""Reproducibility check for CI: run the whole default pipeline in this (fresh) clone, then prove

1. `dvc status` is clean (dvc.lock matches code, params and outputs);
2. every committed metric is reproduced:
   - **exactly**, when the new dvc.lock equals the committed one (a machine of the kind that made it);
   - **within the seed-to-seed spread**, when it does not (another CPU kind computes other bits, and training then
     follows another path, as at another seed): see `within_spread` and docs/reproducibility.md;
3. the wall-clock of the run, printed for the README.

`--compare-only` skips the run and compares the working tree's metrics with the committed ones by the second rule
(for a run made by hand, for example under an instruction-set cap or with a deliberate regression).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from scipy import stats

SPREAD = Path(__file__).with_name("spread.json")  # measured by .ci/spread.py
NOT_COMPARED = {"train_seconds", "seconds_per_epoch", "peak_memory_mb", "best_epoch", "epochs_run", "gamma"}
ODDS = 1e-4  # of a number outside its bound by chance alone, two-sided, when nothing changed but the path


def git_show(path: str) -> str | None:
    r = subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def metric_files(root: Path) -> list[str]:
    """The pipeline's metrics files that CI compares: not the per-epoch training logs nor the window scores."""
    found = (p.relative_to(root) for p in (root / "metrics").rglob("*.json"))
    return sorted(p.as_posix() for p in found if "eval" not in p.parts and "train" not in p.parts)


def numbers(obj: object, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON document, keyed by its dotted path."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(numbers(v, f"{prefix}{k}."))
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        out[prefix.rstrip(".")] = float(obj)
    return out


def compared(key: str) -> bool:
    """Not compared: wall-clock and memory (the machine's); early stopping's epoch counts (they move by whole epochs
    when the best epoch changes with the path; the metrics at that epoch are compared); the γ sweep's winner (a
    choice among runs that lie within each other's noise; the winner's metrics are compared); one species' detection
    numbers (whole bouts and detections, present only for the species detected; their macro and overall scores
    are compared)."""
    return key.split(".")[-1] not in NOT_COMPARED and not key.startswith("per_species.")


def kind(key: str) -> str:
    """The group a number's spread is pooled in: its leaf name (accuracy, f1_macro, ...), with the differences
    between runs kept apart (they move more than a number of one run)."""
    leaf = key.split(".")[-1]
    return f"delta/{leaf}" if key.startswith("delta_vs_baseline") else leaf


def bounds(values: dict[str, dict[str, list[float | None]]]) -> dict[tuple[str, str], float]:
    """How far each number may move: t x sqrt(2) x spread, where the spread is the larger of the number's own
    standard deviation over the seeds and the pooled one of its kind (with four seeds a number's own estimate can
    come out far too small, even 0), and t is Student's quantile at ODDS for the pool's degrees of freedom (two
    runs differ by sqrt(2) standard deviations)."""
    own: dict[tuple[str, str], float] = {}
    pooled: dict[str, list[float]] = defaultdict(list)
    dof: dict[str, int] = defaultdict(int)
    for f, keys in values.items():
        for key, samples in filter(lambda item: compared(item[0]), keys.items()):
            xs = [x for x in samples if x is not None]
            own[f, key] = statistics.variance(xs) if len(xs) > 1 else 0.0
            pooled[kind(key)].append(own[f, key])
            dof[kind(key)] += max(len(xs) - 1, 0)
    out = {}
    for (f, key), var in own.items():
        sd = math.sqrt(max(var, statistics.fmean(pooled[kind(key)])))
        out[f, key] = 0.0 if sd == 0 else float(stats.t.ppf(1 - ODDS / 2, dof[kind(key)])) * math.sqrt(2) * sd
    return out


def within_spread(
    committed: dict[str, dict[str, float]], reproduced: dict[str, dict[str, float]], spread: dict
) -> list[str]:
    """The problems with `reproduced` against `committed` (file -> dotted key -> number) by the spread measured in
    `spread` (.ci/spread.json, see `bounds`): a number of spread 0 (it did not move across seeds: counts, settings,
    the data) must be equal; any other within its bound. A number missing from some seed's run may be missing."""
    bound = bounds(spread["values"])
    problems = []
    for f, old in committed.items():
        new = reproduced.get(f, {})
        for key, value in old.items():
            if not compared(key):
                continue
            if (f, key) not in bound:
                problems.append(f"{f}: {key} has no measured spread (re-run .ci/spread.py)")
            elif key not in new:
                if None not in spread["values"][f][key]:
                    problems.append(f"{f}: {key} committed {value:.6g}, missing from the reproduction")
            elif abs(new[key] - value) > bound[f, key] + 1e-9:
                problems.append(
                    f"{f}: {key} committed {value:.6g} reproduced {new[key]:.6g} (bound {bound[f, key]:.3g})"
                )
    return problems


def exactly(committed: dict[str, dict[str, float]], reproduced: dict[str, dict[str, float]]) -> list[str]:
    problems = []
    for f, old in committed.items():
        new = reproduced.get(f, {})
        for key, value in old.items():
            if compared(key) and new.get(key) != value:
                problems.append(f"{f}: {key} committed {value} reproduced {new.get(key)} (exact)")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare-only", action="store_true", help="compare the working tree's metrics, no run")
    args = parser.parse_args()
    files = metric_files(Path.cwd())
    committed = {f: numbers(json.loads(text)) for f in files if (text := git_show(f)) is not None}
    lock_before = git_show("dvc.lock")
    t0 = time.perf_counter()
    if not args.compare_only:
        subprocess.run(["dvc", "repro"], check=True)
    seconds = time.perf_counter() - t0
    reproduced = {f: numbers(json.loads(Path(f).read_text())) for f in metric_files(Path.cwd())}
    problems = []
    if not args.compare_only:
        status = subprocess.run(["dvc", "status", "--json", "dvc.yaml"], capture_output=True, text=True).stdout
        if json.loads(status or "{}"):
            problems.append(f"dvc status not clean after repro: {status.strip()}")
    same_lock = not args.compare_only and Path("dvc.lock").read_text() == lock_before
    spread = json.loads(SPREAD.read_text())
    problems += exactly(committed, reproduced) if same_lock else within_spread(committed, reproduced, spread)
    rule = "exactly" if same_lock else f"within the spread of {len(spread['seeds'])} seeds"
    print(f"repro-check: pipeline {seconds:.0f} s; dvc.lock {'identical to' if same_lock else 'differs from'} "
          f"the committed one; {len(committed)} metrics files compared {rule}")  # fmt: skip
    for p in problems:
        print(f"repro-check: FAIL {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
