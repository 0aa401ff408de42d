"""Stage `check_params`: the whole params file validated, whenever its text changes → no output.

python stages/check_params.py params.yaml

Every other stage validates the params when it runs, but DVC decides whether a stage runs by comparing its params
with Python's `==`: `-S train.epochs=true` against a locked 1 is "unchanged" (`True == 1`), and no stage would see
it. This stage depends on the params file's bytes instead, so any edit runs it, and a value of the wrong type is
refused in one line before it can stand in dvc.lock for another.
"""

import argparse

from speciesclf.params import load_params
from speciesclf.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("params", help="the params file (with the files its `defaults` names)")
    load_params(parser.parse_args().params)


if __name__ == "__main__":
    run_stage(main)
