"""Stage `ensemble`: the mean of several runs' probabilities on the test split, scored like one run (with its
validation-split headline scores beside them).

    python stages/ensemble.py --models models --features data/features data/features_phase3 \\
        --scores metrics/eval --per-class metrics/per_class --confusion metrics/confusion --metrics metrics

The members are the runs of the groups in ensemble.runs (``phase3`` = every seed of phase3.seeds). Each member
reads the one of the FEATURES stores made with its model's feature settings, so members may differ in front end.
Writes METRICS/ensemble.json, SCORES/ensemble/, PER_CLASS/ensemble/ and CONFUSION/ensemble/ as `evaluate` does for a
run.
"""

import argparse
from pathlib import Path

from speciesclf.evaluation.evaluate import (
    Member,
    ScoreFolders,
    evaluate_ensemble,
    feature_store_of,
    save_scores,
    validation_scores,
)
from speciesclf.models.saved import load_model
from speciesclf.params import load_params
from speciesclf.portable import pin
from speciesclf.runs import ENSEMBLE, runs_of
from speciesclf.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", required=True, help="the trained models")
    parser.add_argument("--features", required=True, nargs="+", help="the feature stores the members may read")
    parser.add_argument("--scores", required=True, help="per-run score folders (written whole)")
    parser.add_argument("--per-class", required=True, help="per-run folders of the per-species table")
    parser.add_argument("--confusion", required=True, help="per-run folders of the confusion pairs")
    parser.add_argument("--metrics", required=True, help="per-run metrics files")
    args = parser.parse_args()
    params = load_params()
    pin(params["train"]["precision"])  # portable mode: the same logits on any CPU
    runs = [run for group in params[ENSEMBLE]["runs"] for run in runs_of(group, params)]
    members = [
        Member(run, Path(args.models) / run, feature_store_of(Path(args.models) / run, args.features)) for run in runs
    ]
    settings = params["evaluate"]
    rare, tau = settings["rare_threshold"], settings["posthoc_tau"]
    models = [load_model(m.model_dir) for m in members]  # once for both splits
    result = evaluate_ensemble(members, rare, tau=tau, models=models)
    validation = validation_scores(evaluate_ensemble(members, rare, split="val", tau=tau, models=models))
    folders = ScoreFolders(Path(args.scores), Path(args.per_class), Path(args.confusion), Path(args.metrics))
    save_scores(result, ENSEMBLE, folders, members=runs, averaged=result["averaged"], validation=validation)
    window, recording = result["window"], result["recording"]
    print(
        f"ensemble of {', '.join(runs)}: accuracy {window['accuracy']:.3f} f1_macro {window['f1_macro']:.3f} "
        f"f1_rare {window['f1_rare']}; recording accuracy {recording['accuracy']:.3f}"
    )


if __name__ == "__main__":
    run_stage(main)
