"""Stages `train_baseline`, `train_phase2a`, `train_phase2b` and `gamma_sweep`: one model each → models/<run>/.

    python stages/train.py baseline|phase2a|phase2b
    python stages/train.py sweep --gamma 1.0      # → models/gamma_sweep/gamma_1.0/
    torchrun --nproc_per_node=2 stages/train.py baseline   # data-parallel (DDP), as train.processes: 2 does

With `train.processes` > 1 the stage starts torchrun on itself (so `dvc repro` runs it); launched by torchrun it
trains with DistributedDataParallel, and only rank 0 logs and writes.

Per-epoch curves go through dvclive to metrics/train/<run>/ (git-tracked; wall-clock times live only there and in
metrics/<run>.json, never in the cached model, so identical runs give identical dvc.lock hashes).
"""

import argparse
import sys

from dvclive import Live

from speciesclf import distributed
from speciesclf.experiment import train_model
from speciesclf.params import load_params
from speciesclf.runs import run_dir
from speciesclf.stage import run_stage, set_threads
from speciesclf.training import EpochStats, TrainConfig, resolve_device

CURVES = ("train_loss", "val_loss", "val_accuracy", "val_f1_macro", "lr", "seconds", "peak_memory_mb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["baseline", "phase2a", "phase2b", "sweep"])
    parser.add_argument("--gamma", help="focal gamma of a sweep run, spelt as in params.yaml (names the run)")
    args = parser.parse_args()
    params = load_params()
    if (args.phase == "sweep") != (args.gamma is not None):
        parser.error("--gamma goes with (and only with) the sweep phase")

    run = run_dir(args.phase, args.gamma)
    model_name = params["models"][args.phase]
    # the baseline is the study's Phase 0: plain cross-entropy; the others use focal loss
    loss = None if args.phase == "baseline" else dict(params["loss"])
    if args.phase == "sweep":
        loss["gamma"] = float(args.gamma)
    train = dict(params["train"])
    processes = train.pop("processes")
    if processes > 1 and not distributed.launched():
        sys.exit(distributed.relaunch(processes))
    set_threads(train.pop("threads"))
    config = TrainConfig(**train, seed=params["seed"])

    with distributed.session(resolve_device(config.device)) as world:
        if not world.is_main:  # the other ranks train in step with rank 0 and write nothing
            train_model("data/features", f"models/{run}", model_name, loss, config, log=None)
            return
        ddp = f", {world.size} processes (DDP)" if world.distributed else ""
        print(f"train {run}: {model_name}, loss {loss or 'cross_entropy'}{ddp}")
        with Live(dir=f"metrics/train/{run}", dvcyaml=None, save_dvc_exp=False, report=None) as live:

            def log_epoch(stats: EpochStats) -> None:
                for key in CURVES:
                    live.log_metric(key, getattr(stats, key))
                live.next_step()

            result = train_model("data/features", f"models/{run}", model_name, loss, config, callbacks=[log_epoch])
            live.summary.update(
                {k: result[k] for k in ("train_seconds", "best_epoch", "epochs_run", "best_val_f1_macro")}
            )


if __name__ == "__main__":
    run_stage(main)
