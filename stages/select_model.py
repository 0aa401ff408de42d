"""Stage `select`: a recipe's candidates cross-validated on the train + validation recordings, the best retrained on
all of them and scored on test once → MODEL (one model directory, an ensemble's members inside) and METRICS.

python stages/select_model.py recipes/synthetic.yaml data/prepared models/selected metrics/selected.json \
    [--report REPORT.md]
"""

import argparse
import dataclasses
import json
from pathlib import Path

from speciesclf.choices import PORTABLE
from speciesclf.files import atomic_dir, write_text
from speciesclf.models.cnn import MODELS
from speciesclf.params import load_params
from speciesclf.portable import pin
from speciesclf.selection.recipe import augment_keys_of, load_recipe
from speciesclf.selection.report import render_markdown
from speciesclf.selection.select import select
from speciesclf.stage import run_stage
from speciesclf.thresholds import rule_of
from speciesclf.training.augment import AugmentConfig
from speciesclf.training.trainer import set_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="the recipe file (recipes/*.yaml)")
    parser.add_argument("prepared", help="the prepare stage's folder (its manifest.csv)")
    parser.add_argument("model", help="the model directory to write (written whole)")
    parser.add_argument("metrics", help="the metrics file to write: fold scores, the choice, test")
    parser.add_argument("--report", help="a Markdown report of the metrics to write")
    parser.add_argument("--title", default="Model selection", help="the report's heading")
    args = parser.parse_args()
    params = load_params()
    recipe = load_recipe(args.recipe, params, MODELS, augment_keys_of(AugmentConfig))
    if params["train"]["precision"] == PORTABLE:  # a mode of the whole pipeline: it overrides the recipe's choice
        recipe = dataclasses.replace(recipe, train={**recipe.train, "precision": PORTABLE})
    set_threads(recipe.train["threads"])
    pin(recipe.train["precision"])  # portable mode: featurizes and trains pinned (after set_threads: one thread)
    with atomic_dir(args.model) as out:
        manifest, rare_threshold = Path(args.prepared) / "manifest.csv", params["evaluate"]["rare_threshold"]
        metrics = select(manifest, recipe, rare_threshold, out, thresholds=rule_of(params["detect"]))
    write_text(args.metrics, json.dumps(metrics, indent=2) + "\n")
    if args.report:
        write_text(args.report, render_markdown(metrics, args.title))


if __name__ == "__main__":
    run_stage(main)
