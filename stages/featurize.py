"""Stage `featurize`: feature windows (features.front_end) of every prepared clip → OUT (a few arrays per split,
see speciesclf.features.store).

python stages/featurize.py data/prepared data/features
python stages/featurize.py data/prepared data/features_phase3 --phase3   # features with phase3.features applied
"""

import argparse
from pathlib import Path

from speciesclf.features.config import FeatureConfig
from speciesclf.features.store import featurize
from speciesclf.files import atomic_dir
from speciesclf.params import load_params, phase3_features
from speciesclf.portable import pin
from speciesclf.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prepared", help="the prepare stage's folder (its manifest.csv)")
    parser.add_argument("out", help="the feature folder (written whole)")
    parser.add_argument("--phase3", action="store_true", help="phase 3's feature store: phase3.features applied")
    args = parser.parse_args()
    params = load_params()
    pin(params["train"]["precision"])  # portable mode: the features' FFTs too
    config = FeatureConfig(**(phase3_features(params) if args.phase3 else params["features"]))
    with atomic_dir(args.out) as out:
        counts = featurize(Path(args.prepared) / "manifest.csv", out, config)
    print("featurize: windows per split " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    run_stage(main)
