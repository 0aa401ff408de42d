"""Stage `prepare`: the recordings and a split manifest → data/prepared/ (manifest.csv, report.json[, audio/])."""

from speciesclf.params import load_params
from speciesclf.prepare import prepare
from speciesclf.stage import run_stage


def main() -> None:
    params = load_params()
    prepare(params, "data/prepared")


if __name__ == "__main__":
    run_stage(main)
