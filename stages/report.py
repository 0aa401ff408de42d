"""Stage `report`: metrics/summary.json and reports/results.md from every model's metrics."""

from pathlib import Path

from speciesclf.io import read_json, write_json, write_text
from speciesclf.params import load_params
from speciesclf.report import build_summary, render_markdown
from speciesclf.runs import PHASES, sweep_runs
from speciesclf.stage import run_stage


def main() -> None:
    params = load_params()
    gammas = params["sweep"]["gammas"]
    runs = [*PHASES, *sweep_runs(gammas)]
    metrics = {run: read_json(f"metrics/{run}.json") for run in runs}
    per_class = {run: read_json(f"metrics/eval/{run}/per_class.json") for run in PHASES}
    summary = build_summary(metrics, per_class, gammas, params["report"])
    write_json("metrics/summary.json", summary)
    Path("reports").mkdir(exist_ok=True)
    write_text("reports/results.md", render_markdown(summary))
    v = summary["verdict"]
    print("report: " + ", ".join(f"{p} {'GO' if v[p]['go'] else 'NO-GO'}" for p in ("phase2a", "phase2b", "stretch")))


if __name__ == "__main__":
    run_stage(main)
