"""Stage `prepare`: the recordings, checked and split by recording → OUT (manifest.csv, report.json[, audio/]).

python stages/prepare.py data/prepared
"""

import argparse

from speciesclf.data.prepare import prepare
from speciesclf.params import load_params
from speciesclf.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the prepared data folder (written whole)")
    args = parser.parse_args()
    prepare(load_params(), args.out)


if __name__ == "__main__":
    run_stage(main)
