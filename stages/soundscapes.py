"""Stage `soundscapes`: synthetic field recordings with calls of the embedded dataset's species at known times →
OUT (audio/soundscape_NN.wav, truth/soundscape_NN.selections.txt).

python stages/soundscapes.py data/soundscapes
"""

import argparse
from pathlib import Path

from speciesclf.data.soundscapes import SoundscapeConfig, write_soundscapes
from speciesclf.data.synth import SynthConfig
from speciesclf.files import atomic_dir
from speciesclf.params import load_params
from speciesclf.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the soundscapes folder (written whole)")
    args = parser.parse_args()
    params = load_params()
    synth_cfg = SynthConfig.from_params(params)
    s = params["soundscapes"]
    cfg = SoundscapeConfig(s["recordings"], s["seconds"], s["bouts_per_minute"], tuple(s["snr_db"]), s["seed"])
    with atomic_dir(args.out) as out:
        write_soundscapes(synth_cfg, cfg, Path(out))


if __name__ == "__main__":
    run_stage(main)
