"""Stage `evaluate@<run>`: test-split metrics of a trained model.

    python stages/evaluate.py baseline|phase2a|phase2b   → metrics/<run>.json, metrics/eval/<run>/
    python stages/evaluate.py gamma_sweep                → the same for every γ in sweep.gammas

metrics/<run>.json holds the headline (window-level) keys at the top, `window` and `recording` sections, and the
training facts. Its `train_seconds` is wall-clock, so the file is a top-level DVC metric, not a hashed output; the
stage's hashed output metrics/eval/<run>/ holds the same scores without it (scores.json), the per-species table
and the confusion pairs (DVC plots), so identical runs give identical hashes and changed scores re-run the report.
"""

import sys
from pathlib import Path

from speciesclf.experiment import evaluate_model
from speciesclf.io import atomic_dir, read_json, write_json
from speciesclf.params import load_params
from speciesclf.runs import PHASES, sweep_runs
from speciesclf.stage import run_stage

HEADLINE = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "f1_rare", "f1_common", "top5_accuracy")


def evaluate_run(run: str, rare_threshold: int) -> None:
    result = evaluate_model(f"models/{run}", "data/features", rare_threshold)
    live_summary = Path(f"metrics/train/{run}/metrics.json")
    train_seconds = read_json(live_summary).get("train_seconds") if live_summary.exists() else None
    window = result["window"]
    metrics = {
        **{k: window[k] for k in HEADLINE},
        "n_test": window["n_test"],
        **result["training"],
        "train_seconds": train_seconds,
        "window": window,
        "recording": result["recording"],
    }
    with atomic_dir(f"metrics/eval/{run}") as out:
        write_json(out / "scores.json", {k: v for k, v in metrics.items() if k != "train_seconds"})
        write_json(out / "per_class.json", result["per_class"])
        write_json(out / "confusion.json", result["confusion"])
    write_json(f"metrics/{run}.json", metrics)
    print(
        f"evaluate {run}: accuracy {window['accuracy']:.3f} f1_macro {window['f1_macro']:.3f} "
        f"f1_rare {window['f1_rare']} (n_test {window['n_test']})"
    )


def main() -> None:
    params = load_params()
    target = sys.argv[1] if len(sys.argv) > 1 else ""
    if target in PHASES:
        runs = [target]
    elif target == "gamma_sweep":
        runs = sweep_runs(params["sweep"]["gammas"])
    else:
        raise ValueError(f"usage: evaluate.py {{{'|'.join(PHASES)}|gamma_sweep}}, got {target!r}")
    for run in runs:
        evaluate_run(run, params["evaluate"]["rare_threshold"])


if __name__ == "__main__":
    run_stage(main)
