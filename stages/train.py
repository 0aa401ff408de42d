"""Stages `train_baseline`, `train_phase1`, `train_phase2a`, `train_phase2b`, `gamma_sweep@γ`, `train_phase3@seed`:
one model each.

    python stages/train.py baseline data/features models/baseline metrics/train/baseline --state checkpoints/baseline
    python stages/train.py gamma_sweep data/features models/gamma_sweep/gamma_1.0 \\
        metrics/train/gamma_sweep/gamma_1.0 --gamma 1.0
    python stages/train.py phase3 data/features_phase3 models/phase3/seed_42 metrics/train/phase3/seed_42 --seed 42
    torchrun --nproc_per_node=2 stages/train.py baseline ...    # data-parallel (DDP), as train.processes: 2 does

With `train.processes` > 1 the stage starts torchrun on itself (so `dvc repro` runs it); launched by torchrun it
trains with DistributedDataParallel, and only rank 0 logs and writes.

With --state (dvc.yaml gives checkpoints/<run>) the run saves its state after every epoch; run again after a kill,
it resumes from the last finished epoch and ends with the same model, then removes the state.

Per-epoch curves go through dvclive to CURVES (git-tracked; wall-clock times live only there and in
metrics/<run>.json, never in the cached model, so identical runs give identical dvc.lock hashes).
"""

import argparse
import functools
import sys
from contextlib import nullcontext

from dvclive import Live

from speciesclf.limits import one_of, refusal
from speciesclf.models.cnn import MODELS
from speciesclf.models.saved import save_model
from speciesclf.params import ParamsError, load_params
from speciesclf.portable import pin
from speciesclf.runs import GAMMA_SWEEP, PHASE3, PHASES, loss_recipe, phase3_run, sweep_run
from speciesclf.stage import run_stage
from speciesclf.thresholds import rule_of
from speciesclf.training import distributed
from speciesclf.training.augment import AugmentConfig
from speciesclf.training.config import TrainConfig
from speciesclf.training.run import train_model
from speciesclf.training.trainer import EpochStats, resolve_device, set_threads

CURVES = ("train_loss", "val_loss", "val_accuracy", "val_f1_macro", "lr", "seconds", "peak_memory_mb")


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=[*PHASES, GAMMA_SWEEP, PHASE3])
    parser.add_argument("features", help="the feature folder")
    parser.add_argument("model", help="the model folder to write (model.pt, model.json)")
    parser.add_argument("curves", help="the dvclive folder of the per-epoch curves")
    parser.add_argument("--gamma", help="focal γ of a gamma_sweep run, spelt as in params.yaml")
    parser.add_argument("--seed", type=int, help="the seed of a phase3 run (one of phase3.seeds)")
    parser.add_argument("--state", help="folder for the per-epoch training state: a killed run resumes from it")
    args = parser.parse_args()
    if (args.phase == GAMMA_SWEEP) != (args.gamma is not None):
        parser.error(f"--gamma goes with (and only with) {GAMMA_SWEEP}")
    if (args.phase == PHASE3) != (args.seed is not None):
        parser.error(f"--seed goes with (and only with) {PHASE3}")
    return args


def main() -> None:
    args = _args()
    params = load_params()
    model_name = params["models"][args.phase]
    if model_name not in MODELS:
        raise ParamsError(refusal(f"models.{args.phase}", model_name, one_of(MODELS)))
    loss = loss_recipe(params, args.phase, args.gamma)
    train = dict(params["train"])
    processes = train.pop("processes")
    if processes > 1 and not distributed.launched():
        sys.exit(distributed.relaunch(processes))
    set_threads(train.pop("threads"))
    pin(train["precision"])  # after set_threads: portable mode trains on one thread
    config = TrainConfig(**train, seed=params["seed"] if args.seed is None else args.seed)
    augment = AugmentConfig(**params["augment"]) if args.phase == PHASE3 else None  # phases 0-2: the study's

    run = args.phase
    if args.gamma is not None:
        run = sweep_run(args.gamma)
    elif args.seed is not None:
        run = phase3_run(args.seed)
    with distributed.session(resolve_device(config.device)) as world:
        is_main = world.is_main  # rank 0 alone prints, logs curves and writes the model; the others train in step
        if is_main:
            ddp = f", {world.size} processes (DDP)" if world.distributed else ""
            augmenting = f", augment {augment}" if augment is not None and augment.enabled else ""
            print(f"train {run}: {model_name}, loss {loss or 'cross_entropy'}{augmenting}{ddp}")
        curves = Live(dir=args.curves, dvcyaml=None, save_dvc_exp=False, report=None) if is_main else nullcontext()
        with curves as live:
            callbacks = [functools.partial(_log_epoch, live)] if is_main else []
            log = print if is_main else None
            trained = train_model(
                args.features,
                model_name,
                loss,
                config,
                callbacks,
                log,
                args.state,
                [__file__],
                augment,
                thresholds=rule_of(params["detect"]),
            )
            if is_main:
                save_model(args.model, trained.network, trained.card)
                if trained.state is not None:
                    trained.state.discard()  # the model is saved: nothing left to resume
                live.summary["train_seconds"] = trained.train_seconds
                live.summary["resources"] = trained.resources
                live.summary.update({k: trained.card[k] for k in ("best_epoch", "epochs_run", "best_val_f1_macro")})


def _log_epoch(live: Live, stats: EpochStats) -> None:
    for key in CURVES:
        live.log_metric(key, getattr(stats, key))
    live.next_step()


if __name__ == "__main__":
    run_stage(main)
