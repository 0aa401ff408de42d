"""Stage `featurize`: MFCC windows of every prepared clip → data/features/ (a few arrays per split)."""

from speciesclf.features import FeatureConfig
from speciesclf.featurize import featurize
from speciesclf.io import atomic_dir
from speciesclf.params import load_params
from speciesclf.stage import run_stage


def main() -> None:
    feats = dict(load_params()["features"])
    hop = feats.pop("train_hop_seconds")
    with atomic_dir("data/features") as out:
        counts = featurize("data/prepared/manifest.csv", out, FeatureConfig.from_dict(feats), hop)
    print("featurize: windows per split " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    run_stage(main)
