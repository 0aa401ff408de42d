"""Measure the default pipeline's seed-to-seed spread, the yardstick of the cross-machine reproducibility check.

Another CPU kind computes other bits, and from the first differing step a training run follows another path, as
one trained at another seed does. So each committed metric is re-made with every training seed changed (the
network's initialisation and batch order; the data, its split and the folds stay as committed), and the values
go to `.ci/spread.json`, which `.ci/repro_check.py` reads when dvc.lock was made on another kind of machine.

Usage: python .ci/spread.py --seeds 43 44 45   (about 11 minutes per seed on 2 cores; run on a clean checkout
whose dvc.lock is current, so that the committed metrics are the first sample)

It works in a scratch git worktree of HEAD that shares this repository's DVC cache: the stages before training
come from the cache, and for each seed the worktree's stages/train.py trains at it and the selection recipe gives
it to every candidate (`seeds:`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repro_check import metric_files, numbers

RECIPE = "recipes/synthetic.yaml"
TRAIN = "stages/train.py"
SEED_LINE = 'seed=params["seed"] if args.seed is None else args.seed'


def reseed(worktree: Path, seed: int) -> None:
    """Every training stage (stages/train.py) and every candidate of the selection recipe at `seed`."""
    train = worktree / TRAIN
    text = train.read_text()
    if text.count(SEED_LINE) != 1:
        sys.exit(f"spread: {TRAIN} no longer reads its seed as `{SEED_LINE}`: update {Path(__file__).name}")
    train.write_text(text.replace(SEED_LINE, f"seed={seed}"))
    recipe = yaml.safe_load((worktree / RECIPE).read_text())
    for spec in recipe["candidates"].values():
        spec["seeds"] = [seed]
    (worktree / RECIPE).write_text(yaml.safe_dump(recipe, sort_keys=False))


def run(worktree: Path, seed: int) -> dict[str, dict[str, float]]:
    subprocess.run(["git", "checkout", "-q", "--", "dvc.lock", TRAIN, RECIPE], cwd=worktree, check=True)
    shutil.rmtree(worktree / "checkpoints", ignore_errors=True)  # a previous seed's state must not be resumed
    reseed(worktree, seed)
    env = {**os.environ, "PYTHONPATH": str(worktree / "src")}
    subprocess.run(["dvc", "repro", "-q"], cwd=worktree, env=env, check=True)
    return {f: numbers(json.loads((worktree / f).read_text())) for f in metric_files(worktree)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="training seeds besides the committed")
    parser.add_argument("--out", type=Path, default=Path(".ci/spread.json"))
    args = parser.parse_args()
    root = Path.cwd()
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # this venv's dvc
    committed_seed = yaml.safe_load((root / "params.yaml").read_text())["seed"]
    runs = {committed_seed: {f: numbers(json.loads((root / f).read_text())) for f in metric_files(root)}}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    scratch = Path(tempfile.mkdtemp(prefix="spread-"))
    worktree = scratch / "tree"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(worktree), "HEAD"], check=True)
    try:
        (worktree / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {root / '.dvc' / 'cache'}\n")
        subprocess.run(["dvc", "checkout", "-q"], cwd=worktree, check=False)
        for seed in args.seeds:
            print(f"spread: seed {seed}", flush=True)
            runs[seed] = run(worktree, seed)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    values = {
        f: {key: [runs[s][f].get(key) for s in runs] for key in runs[committed_seed][f]} for f in runs[committed_seed]
    }
    out = {
        "seeds": list(runs),
        "machine": f"{platform.machine()} {_cpu_model()}",
        "commit": commit,
        "values": values,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"spread: {len(runs)} runs, {sum(map(len, values.values()))} numbers -> {args.out}")
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
