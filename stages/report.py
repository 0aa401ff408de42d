"""Stage `report`: the summary of every run (SUMMARY) and the study's report (MARKDOWN).

    python stages/report.py --metrics metrics --per-class metrics/per_class --summary metrics/summary.json \\
        --markdown reports/results.md
"""

import argparse
from pathlib import Path

from speciesclf.evaluation.report import build_summary, render_markdown
from speciesclf.files import read_json, write_json, write_text
from speciesclf.params import load_params
from speciesclf.runs import ENSEMBLE, GAMMA_SWEEP, PHASE3, PHASES, phase3_runs, sweep_runs
from speciesclf.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", required=True, help="the folder of metrics/<run>.json")
    parser.add_argument("--per-class", required=True, help="the folder of the runs' per-species tables")
    parser.add_argument("--summary", required=True, help="the summary JSON to write")
    parser.add_argument("--markdown", required=True, help="the report to write")
    args = parser.parse_args()
    params = load_params()
    gammas, seeds = params[GAMMA_SWEEP]["gammas"], params[PHASE3]["seeds"]
    runs = [*PHASES, *sweep_runs(gammas), *phase3_runs(seeds), ENSEMBLE]
    metrics = {run: read_json(Path(args.metrics) / f"{run}.json") for run in runs}
    with_species = [*PHASES, *phase3_runs(seeds), ENSEMBLE]
    per_class = {run: read_json(Path(args.per_class) / run / "per_class.json") for run in with_species}
    gamma = params["loss"]["gamma"]
    summary = build_summary(metrics, per_class, gammas, params["report"], seeds=seeds, default_gamma=gamma)
    write_json(args.summary, summary)
    write_text(args.markdown, render_markdown(summary))
    v = summary["verdict"]
    print("report: " + ", ".join(f"{p} {'GO' if v[p]['go'] else 'NO-GO'}" for p in ("phase2a", "phase2b", "stretch")))


if __name__ == "__main__":
    run_stage(main)
