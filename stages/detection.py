"""Stage `detection`: a model's detections in the soundscapes scored against their truth, its fitted per-species
thresholds against a global threshold tuned on other soundscapes → METRICS, CURVE (precision-recall over global
thresholds, a DVC plot) and REPORT.

python stages/detection.py models/phase2b data/soundscapes metrics/detection.json metrics/detection/curve.csv \
    reports/detection.md
"""

import argparse
import json
from pathlib import Path

from speciesclf.evaluation.detection import CURVE_COLUMNS, measure_detection, render_markdown
from speciesclf.files import write_csv, write_text
from speciesclf.params import load_params
from speciesclf.portable import pin
from speciesclf.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the model directory (its model.json holds fitted thresholds)")
    parser.add_argument("soundscapes", help="the soundscapes stage's folder (audio/, truth/)")
    parser.add_argument("metrics", help="the metrics file to write")
    parser.add_argument("curve", help="the precision-recall CSV to write (one row per global threshold)")
    parser.add_argument("report", help="the Markdown report to write")
    args = parser.parse_args()
    params = load_params()
    pin(params["train"]["precision"])  # portable mode: the same window scores on any CPU
    s = params["soundscapes"]
    audio = sorted((Path(args.soundscapes) / "audio").glob("*.wav"))
    pairs = [(p, Path(args.soundscapes) / "truth" / f"{p.stem}.selections.txt") for p in audio]
    half = len(pairs) // 2  # the first half tunes the global threshold, the second is scored
    metrics, curve = measure_detection(args.model, pairs[:half], pairs[half:], s["hop_seconds"], s["collar_seconds"])
    metrics = {"model": args.model, **metrics}
    write_text(args.metrics, json.dumps(metrics, indent=2) + "\n")
    write_csv(args.curve, CURVE_COLUMNS, [[row[k] for k in CURVE_COLUMNS] for row in curve])
    write_text(args.report, render_markdown(metrics))
    if not metrics["measured"]:
        print(f"detection: not measured: {metrics['reason']}")
        return
    fitted, tuned = metrics["fitted"]["macro"]["f_measure"], metrics["tuned_global"]["macro"]["f_measure"]
    print(f"detection: macro event-F1 {fitted:.3f} fitted, {tuned:.3f} global (tuned on other soundscapes)")


if __name__ == "__main__":
    run_stage(main)
