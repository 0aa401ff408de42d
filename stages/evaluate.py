"""Stage `evaluate@<run>`: test-split metrics of a trained model, or of every model of the γ sweep.

    python stages/evaluate.py baseline --features data/features --models models --curves metrics/train \\
        --scores metrics/eval --metrics metrics

For each run (``baseline``; for ``gamma_sweep``, ``gamma_sweep/gamma_<γ>`` for every γ in gamma_sweep.gammas; for
``phase3``, ``phase3/seed_<seed>`` for every seed in phase3.seeds, on its own feature store) it
reads MODELS/<run> and the training time in CURVES/<run>, and writes METRICS/<run>.json (the headline window-level
scores at the top, ``window`` and ``recording`` sections, the training facts) and SCORES/<run>/. The latter, the
stage's hashed output, holds the same scores without the wall-clock ``train_seconds`` (scores.json), the
per-species table and the confusion pairs (DVC plots): identical runs give identical hashes, changed scores re-run
the report.
"""

import argparse
from pathlib import Path

from speciesclf.cli import run_stage
from speciesclf.evaluation.evaluate import evaluate_model
from speciesclf.evaluation.metrics import HEADLINE
from speciesclf.files import atomic_dir, read_json, write_json
from speciesclf.params import load_params
from speciesclf.runs import GAMMA_SWEEP, PHASE3, PHASES, phase3_runs, sweep_runs


def evaluate_run(run: str, args: argparse.Namespace, rare_threshold: int) -> None:
    result = evaluate_model(Path(args.models) / run, args.features, rare_threshold)
    curves = Path(args.curves) / run / "metrics.json"
    train_seconds = read_json(curves).get("train_seconds") if curves.exists() else None
    window = result["window"]
    metrics = {
        **{k: window[k] for k in HEADLINE},
        "n_test": window["n_test"],
        **result["training"],
        "train_seconds": train_seconds,
        "window": window,
        "recording": result["recording"],
    }
    with atomic_dir(Path(args.scores) / run) as out:
        write_json(out / "scores.json", {k: v for k, v in metrics.items() if k != "train_seconds"})
        write_json(out / "per_class.json", result["per_class"])
        write_json(out / "confusion.json", result["confusion"])
    write_json(Path(args.metrics) / f"{run}.json", metrics)
    print(
        f"evaluate {run}: accuracy {window['accuracy']:.3f} f1_macro {window['f1_macro']:.3f} "
        f"f1_rare {window['f1_rare']} (n_test {window['n_test']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=[*PHASES, GAMMA_SWEEP, PHASE3])
    for folder, what in [
        ("features", "the feature folder"),
        ("models", "the trained models"),
        ("curves", "the per-epoch curves"),
        ("scores", "per-run score folders (written whole)"),
        ("metrics", "per-run metrics files"),
    ]:
        parser.add_argument(f"--{folder}", required=True, help=what)
    args = parser.parse_args()
    params = load_params()
    groups = {GAMMA_SWEEP: sweep_runs(params[GAMMA_SWEEP]["gammas"]), PHASE3: phase3_runs(params[PHASE3]["seeds"])}
    for run in groups.get(args.phase, [args.phase]):
        evaluate_run(run, args, params["evaluate"]["rare_threshold"])


if __name__ == "__main__":
    run_stage(main)
