"""Stage `evaluate@<group>`: test-split metrics of a trained model, or of every model of a group (with its
validation-split headline scores beside them, for choices between runs).

    python stages/evaluate.py baseline --features data/features --models models --curves metrics/train \\
        --scores metrics/eval --per-class metrics/per_class --confusion metrics/confusion --metrics metrics

For each run of the group (``baseline``; for ``gamma_sweep``, ``gamma_sweep/gamma_<γ>`` for every γ in
gamma_sweep.gammas; for ``phase3``, ``phase3/seed_<seed>`` for every seed in phase3.seeds, on its own feature
store) it reads MODELS/<run> and the training time and resources in CURVES/<run>, and writes METRICS/<run>.json,
SCORES/<run>/, PER_CLASS/<run>/ and CONFUSION/<run>/ (see ``speciesclf.evaluation.evaluate.save_scores``).
"""

import argparse
from pathlib import Path

from speciesclf.evaluation.evaluate import ScoreFolders, evaluate_model, save_scores, validation_scores
from speciesclf.files import read_json
from speciesclf.models.saved import load_model
from speciesclf.params import load_params
from speciesclf.portable import pin
from speciesclf.runs import GROUPS, runs_of
from speciesclf.stage import run_stage


def _trained_it(curves: dict, card: dict) -> bool:
    """Whether the training summary in the curves comes from the training that made this model card."""
    same = ("best_epoch", "epochs_run", "best_val_f1_macro")
    return curves.get("resources", {}).get("model") == card["model"] and all(curves.get(k) == card[k] for k in same)


def evaluate_run(run: str, args: argparse.Namespace, settings: dict) -> None:
    folders = ScoreFolders(Path(args.scores), Path(args.per_class), Path(args.confusion), Path(args.metrics))
    model_dir, rare, tau = Path(args.models) / run, settings["rare_threshold"], settings["posthoc_tau"]
    model = load_model(model_dir)  # once for both splits
    result = evaluate_model(model_dir, args.features, rare, tau=tau, model=model)
    validation = validation_scores(evaluate_model(model_dir, args.features, rare, split="val", tau=tau, model=model))
    curves = Path(args.curves) / run / "metrics.json"
    summary = read_json(curves) if curves.exists() else {}  # wall-clock facts: the training stage measured them
    if not _trained_it(summary, model.card):
        # a model DVC restored from its run cache leaves the git-tracked curves as they were: another run's
        summary = {}
    facts = {**result["training"], "validation": validation}
    facts |= {"train_seconds": summary.get("train_seconds"), "resources": summary.get("resources")}
    save_scores(result, run, folders, **facts)
    window = result["window"]
    print(
        f"evaluate {run}: accuracy {window['accuracy']:.3f} f1_macro {window['f1_macro']:.3f} "
        f"f1_rare {window['f1_rare']} (n_test {window['n_test']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=GROUPS)
    for folder, what in [
        ("features", "the feature folder"),
        ("models", "the trained models"),
        ("curves", "the per-epoch curves"),
        ("scores", "per-run score folders (written whole)"),
        ("per-class", "per-run folders of the per-species table (written whole)"),
        ("confusion", "per-run folders of the confusion pairs (written whole)"),
        ("metrics", "per-run metrics files"),
    ]:
        parser.add_argument(f"--{folder}", required=True, help=what)
    args = parser.parse_args()
    params = load_params()
    pin(params["train"]["precision"])  # portable mode: the same logits on any CPU
    for run in runs_of(args.phase, params):
        evaluate_run(run, args, params["evaluate"])


if __name__ == "__main__":
    run_stage(main)
