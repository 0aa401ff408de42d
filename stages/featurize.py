"""Stage `featurize`: feature windows (features.front_end) of every prepared clip → OUT (a few arrays per split,
see speciesclf.features.store).

python stages/featurize.py data/prepared data/features
"""

import argparse
from pathlib import Path

from speciesclf.cli import run_stage
from speciesclf.features.mfcc import FeatureConfig
from speciesclf.features.store import featurize
from speciesclf.files import atomic_dir
from speciesclf.params import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prepared", help="the prepare stage's folder (its manifest.csv)")
    parser.add_argument("out", help="the feature folder (written whole)")
    args = parser.parse_args()
    config = FeatureConfig(**load_params()["features"])
    with atomic_dir(args.out) as out:
        counts = featurize(Path(args.prepared) / "manifest.csv", out, config)
    print("featurize: windows per split " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    run_stage(main)
