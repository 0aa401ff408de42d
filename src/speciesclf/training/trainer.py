"""The training loop: warm-up + cosine learning rate, early stopping on validation macro-F1, best weights kept.

The training split lives on the device as one tensor and each epoch walks a seeded permutation of it: no
per-sample Dataset/DataLoader, whose Python overhead dominates for inputs this small (see ``make bench``).
On CPU every run with the same seed and thread count is bit-identical (``torch.use_deterministic_algorithms``);
on CUDA a few kernels have no deterministic variant, so GPU runs are repeatable only up to float rounding.

Inside a process group (``torchrun``, see :mod:`speciesclf.training.distributed`) the same loop trains with
DistributedDataParallel: each rank walks its shard of every epoch's permutation with ``batch_size`` samples per
step (an effective batch of ``batch_size * world size``), validation is split across ranks and gathered, and only
rank 0 is given callbacks and a log.
"""

from __future__ import annotations

import copy
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from speciesclf.choices import DEVICES, PORTABLE, PRECISIONS
from speciesclf.portable import ExactSqrtAdamW
from speciesclf.progress import progress
from speciesclf.training import distributed
from speciesclf.training.augment import AugmentConfig, Augmenter, DecibelScale, WindowChain
from speciesclf.training.checkpoint import TrainingState
from speciesclf.training.config import TrainConfig

__all__ = [
    "EpochStats",
    "NonFiniteLossError",
    "TrainResult",
    "Trainer",
    "resolve_device",
    "seed_all",
    "set_threads",
]


class NonFiniteLossError(RuntimeError):
    """The first training batch gave a NaN/inf loss, before any update: the data or the loss is at fault; the
    message names the epoch and batch. (A loss that turns non-finite later is a diverged run: see ``fit``.)"""


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_f1_macro: float
    lr: float
    seconds: float
    peak_memory_mb: float


@dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    best_val_f1_macro: float | None  # None: trained without a validation set
    stopped_early: bool
    train_seconds: float
    device: str
    precision: str
    world_size: int = 1
    history: list[EpochStats] = field(default_factory=list)
    diverged: str | None = None  # where the training loss turned non-finite, when it did: training stopped there


def seed_all(seed: int) -> None:
    """Seed every generator training touches and demand deterministic kernels."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required for deterministic cuBLAS
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    # strict on CPU (every op used has a deterministic kernel); CUDA lacks some (e.g. adaptive pooling backward)
    _deterministic_kernels(warn_only=torch.cuda.is_available())


def _deterministic_kernels(warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms(True)`` for eager kernels, without its 1.3 s import of the compiler.

    The public call also imports ``torch._inductor`` (torch 2.14), only to set the flag that compiled graphs read;
    nothing here is compiled, and a training stage is a fresh process each time. Where the compiler is already
    loaded, or torch lacks the eager switch, the public call does both.
    """
    eager_switch = getattr(torch._C, "_set_deterministic_algorithms", None)
    if eager_switch is None or "torch._inductor" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
    else:
        eager_switch(True, warn_only=warn_only)


def set_threads(threads: int) -> None:
    """``threads`` > 0 pins torch's intra-op threads (two queue workers on two cores must not oversubscribe)."""
    if threads > 0:
        torch.set_num_threads(threads)


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but torch sees no MPS device")
    return torch.device(name)


def has_fast_bf16(device: torch.device) -> bool:
    """bf16 that pays: AMX/AVX512-BF16 on CPU (oneDNN), compute capability >= 8 on CUDA."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or ``None`` for plain fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision in ("fp32", PORTABLE) or (precision == "auto" and not has_fast_bf16(device)):
        return None
    return torch.bfloat16


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def _finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


@dataclass
class _Best:
    """Early stopping: the best validation macro-F1 so far, its epoch and a copy of its weights."""

    f1: float = -1.0
    epoch: int = 0
    state: dict[str, torch.Tensor] | None = None

    def update(self, stats: EpochStats, model: nn.Module) -> bool:
        if stats.val_f1_macro <= self.f1:
            return False
        self.f1, self.epoch, self.state = stats.val_f1_macro, stats.epoch, copy.deepcopy(model.state_dict())
        return True


@dataclass
class _Run:
    """What one ``fit`` works with: the training split on the device, the network as trained, the optimiser."""

    x: torch.Tensor
    y: torch.Tensor
    net: nn.Module  # the model, wrapped in DistributedDataParallel inside a process group
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    shuffle: torch.Generator  # owns the shuffling, independent of dropout's stream
    per_rank: int  # samples each rank walks per epoch (DistributedSampler pads every shard to this length)
    chain: WindowChain | None  # the windows' order, on the device, for a random crop (None: windows as cut)


class Trainer:
    """Train a classifier on in-memory features ``(n, bands, frames)`` with integer labels ``(n,)``.

    ``callbacks`` are called with each epoch's :class:`EpochStats` (a stage plugs dvclive in here); ``augment``
    transforms each training batch (:mod:`speciesclf.training.augment`; none by default), gain and background
    through ``decibels``, the features' decibel scale; ``log`` receives one progress line per epoch (``None``
    silences it). Under DDP every rank runs the same loop; give callbacks and a log to rank 0 only.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module | None = None,
        config: TrainConfig | None = None,
        callbacks: Sequence[Callable[[EpochStats], None]] = (),
        log: Callable[[str], None] | None = print,
        augment: AugmentConfig | None = None,
        decibels: DecibelScale | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.augment = Augmenter(augment or AugmentConfig(), decibels)
        self.world = distributed.current()
        self.device = resolve_device(self.config.device)
        if self.world.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.world.local_rank)  # one GPU per process
        self.autocast_dtype = resolve_precision(self.config.precision, self.device)
        self.model = model.to(self.device)
        # (not in portable mode: with oneDNN off, NHWC takes a slower path and gains nothing)
        if self.config.channels_last and self.config.precision != PORTABLE and self.device.type in ("cpu", "cuda"):
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn = (loss_fn or nn.CrossEntropyLoss()).to(self.device)
        self.callbacks = list(callbacks)
        self.log = log

    def fit(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_val: np.ndarray | None,
        y_val: np.ndarray | None,
        state: TrainingState | None = None,
        chain: WindowChain | None = None,
    ) -> TrainResult:
        """Train; leave the model with the weights of the epoch with the best validation macro-F1.

        With no validation set (``x_val`` None: cross-validation's folds, where the held-out fold must not choose
        the epoch) every epoch runs and the last one's weights are kept.

        A training loss that turns non-finite ends training there (the run diverged: ``TrainResult.diverged`` says
        where) and keeps the best epoch so far, or the initial weights (``best_epoch`` 0) if no epoch finished, so
        that the run is evaluated and judged collapsed rather than lost. A non-finite loss on the very first batch
        raises :class:`NonFiniteLossError`: before any update, the data or the loss is at fault.

        With a ``state``, the run is saved there after every epoch and continues from the last saved epoch when
        one is there (the callbacks are first given the saved epochs again, so curves run on unbroken).
        ``chain``, how the training windows continue one another, is what ``augment.random_crop`` crops from.
        """
        cfg = self.config
        self._check_input(x_train, x_val, chain)
        seed_all(cfg.seed)
        run = self._start(x_train, y_train, chain if self.augment.config.random_crop else None)
        best, history = _Best(state=copy.deepcopy(self.model.state_dict())), []  # epoch 0: the initial weights
        saved = state.load(self.device) if state is not None else None
        spent = self._resume(run, best, history, saved) if saved is not None else 0.0
        t_start = time.perf_counter() - spent
        diverged = None
        for epoch in range(len(history) + 1, cfg.epochs + 1):
            if history and history[-1].epoch - best.epoch >= cfg.patience:
                break  # early stopping (checked here, so a run resumed after its last epoch stops too)
            t0 = time.perf_counter()
            lr = run.opt.param_groups[0]["lr"]
            train_loss, diverged = self._train_epoch(run, epoch, check_weights=x_val is None)
            if diverged is not None:
                self._report_divergence(diverged, best)
                break
            stats = self._validate(x_val, y_val, epoch=epoch, train_loss=train_loss, lr=lr, t0=t0)
            history.append(stats)
            improved = best.update(stats, self.model)  # every rank sees the same validation: same decisions
            if state is not None and self.world.is_main:
                state.save(self._snapshot(run, best, history, time.perf_counter() - t_start))
            self._report(stats, improved)
        self.model.load_state_dict(best.state)
        return TrainResult(
            best_epoch=best.epoch,
            epochs_run=len(history),
            best_val_f1_macro=max(best.f1, 0.0) if x_val is not None else None,
            stopped_early=len(history) < cfg.epochs,
            train_seconds=time.perf_counter() - t_start,
            device=str(self.device),
            precision=self._precision(),
            world_size=self.world.size,
            history=history,
            diverged=diverged,
        )

    # -- the steps of fit, in order ----------------------------------------------------------------------------
    def _check_input(self, x_train: np.ndarray, x_val: np.ndarray, chain: WindowChain | None) -> None:
        if len(x_train) == 0 or (x_val is not None and len(x_val) == 0):
            raise ValueError(f"need non-empty training and validation sets, got {len(x_train)} and {len(x_val)}")
        self.augment.config.check_input(*x_train.shape[1:3])
        if self.augment.config.random_crop:
            if chain is None:
                raise ValueError("augment.random_crop: needs the order of the training windows (a WindowChain)")
            chain.check_input(len(x_train), x_train.shape[2])

    def _start(self, x_train: np.ndarray, y_train: np.ndarray, chain: WindowChain | None) -> _Run:
        cfg = self.config
        shuffle = torch.Generator().manual_seed(cfg.seed)
        x = torch.as_tensor(x_train, dtype=torch.float32).to(self.device)
        y = torch.as_tensor(y_train, dtype=torch.long).to(self.device)
        per_rank = math.ceil(len(x) / self.world.size)
        steps_per_epoch = math.ceil(per_rank / cfg.batch_size)
        net: nn.Module = self.model
        if self.world.distributed:
            # DDP broadcasts rank 0's weights now and averages gradients in every backward
            net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.index is not None else None
            )
        adamw = ExactSqrtAdamW if cfg.precision == PORTABLE else torch.optim.AdamW
        opt = adamw(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: self._lr_factor(s, steps_per_epoch))
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return _Run(x, y, net, opt, sched, shuffle, per_rank, chain.to(self.device) if chain is not None else None)

    def _train_epoch(self, run: _Run, epoch: int, *, check_weights: bool = False) -> tuple[float, str | None]:
        """One pass over this rank's share of the training split: the mean loss over all ranks, and where the loss
        turned non-finite if it did (the pass ends there). ``check_weights`` also reports weights left non-finite
        by the pass: without validation no score rejects such an epoch, and the next epoch's loss comes too late
        for the last one."""
        cfg, n = self.config, len(run.x)
        self.model.train()
        if self.world.distributed:
            order = distributed.shard(n, self.world, epoch=epoch, seed=cfg.seed).to(self.device)
        else:
            order = torch.randperm(n, generator=run.shuffle).to(self.device)
        loss_sum = torch.zeros((), device=self.device)
        starts = range(0, len(order), cfg.batch_size)
        if self.log is not None:  # a bar once an epoch takes a while (the log's epoch line says how it ended)
            starts = progress(starts, f"epoch {epoch}", "batch", delay=5.0)
        for batch, start in enumerate(starts):
            idx = order[start : start + cfg.batch_size]
            if len(idx) < 2 and n > 1:
                continue  # batch norm cannot train on a lone sample; it is seen again next epoch
            loss = self._step(run, idx)
            if not torch.isfinite(loss):
                where = f"non-finite training loss ({loss.item()}) at epoch {epoch}, batch {batch}"
                if epoch == 1 and batch == 0:
                    raise NonFiniteLossError(where)
                return float("nan"), where
            loss_sum += loss.detach() * len(idx)
        distributed.all_reduce_sum(loss_sum)
        if check_weights and not _finite(self.model):
            return float("nan"), f"non-finite weights after epoch {epoch}"
        return float(loss_sum) / (run.per_rank * self.world.size), None

    def _step(self, run: _Run, idx: torch.Tensor) -> torch.Tensor:
        """Forward, backward and an optimiser step on one (augmented) batch; a non-finite loss is returned before
        any update."""
        x = run.chain.crop(run.x, idx) if run.chain is not None else run.x[idx]  # a random crop needs the next window
        batch = self.augment(x, run.y[idx])
        with self._autocast():
            logits = run.net(batch.x)
        loss = batch.loss(self.loss_fn, logits.float())  # the loss in fp32 whatever the forward's dtype
        if not torch.isfinite(loss):
            return loss
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        run.opt.step()
        run.sched.step()
        return loss

    def _validate(
        self, x_val: np.ndarray | None, y_val: np.ndarray | None, *, epoch: int, train_loss: float, lr: float, t0: float
    ) -> EpochStats:
        if x_val is None:  # NaN scores: _Best then follows the last epoch, and early stopping never triggers
            nan = float("nan")
            return EpochStats(
                epoch, train_loss, nan, nan, nan, lr, time.perf_counter() - t0, _peak_memory_mb(self.device)
            )
        logits = self._val_logits(x_val)
        pred = logits.argmax(1).numpy()
        return EpochStats(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=float(nn.functional.cross_entropy(logits, torch.as_tensor(y_val, dtype=torch.long))),
            val_accuracy=float((pred == y_val).mean()),
            val_f1_macro=float(f1_score(y_val, pred, labels=np.unique(y_val), average="macro", zero_division=0)),
            lr=lr,
            seconds=time.perf_counter() - t0,
            peak_memory_mb=_peak_memory_mb(self.device),
        )

    def _report(self, stats: EpochStats, improved: bool) -> None:
        if self.log:
            self.log(
                f"epoch {stats.epoch:3d}/{self.config.epochs} train_loss {stats.train_loss:.4f} "
                f"val_loss {stats.val_loss:.4f} val_acc {stats.val_accuracy:.3f} val_f1 {stats.val_f1_macro:.3f} "
                f"lr {stats.lr:.2e} {stats.seconds:.1f}s{' *' if improved else ''}"
            )
        for callback in self.callbacks:
            callback(stats)

    def _report_divergence(self, where: str, best: _Best) -> None:
        if self.log:
            kept = f"epoch {best.epoch}'s weights" if best.epoch else "the initial weights (no epoch finished)"
            self.log(f"training diverged: {where}; stopping with {kept}")

    # -- resuming ---------------------------------------------------------------------------------------------
    def _snapshot(self, run: _Run, best: _Best, history: list[EpochStats], seconds: float) -> dict[str, Any]:
        """Everything the next epoch depends on: weights, optimiser, schedule, random generators, early stopping."""
        return {
            "model": self.model.state_dict(),
            "optimizer": run.opt.state_dict(),
            "scheduler": run.sched.state_dict(),
            "shuffle_rng": run.shuffle.get_state(),
            "torch_rng": torch.get_rng_state(),  # dropout
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "best": {"f1": best.f1, "epoch": best.epoch, "state": best.state},
            "history": [asdict(h) for h in history],
            "seconds": seconds,
        }

    def _resume(self, run: _Run, best: _Best, history: list[EpochStats], saved: dict[str, Any]) -> float:
        """Put a :meth:`_snapshot` back; returns the training seconds it had taken."""
        self.model.load_state_dict(saved["model"])
        run.opt.load_state_dict(saved["optimizer"])
        run.sched.load_state_dict(saved["scheduler"])
        run.shuffle.set_state(saved["shuffle_rng"].cpu())
        torch.set_rng_state(saved["torch_rng"].cpu())
        if saved["cuda_rng"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in saved["cuda_rng"]])
        best.f1, best.epoch, best.state = saved["best"]["f1"], saved["best"]["epoch"], saved["best"]["state"]
        history.extend(EpochStats(**h) for h in saved["history"])
        if self.log:
            self.log(f"resuming at epoch {len(history) + 1}: epochs 1-{len(history)} restored from the saved state")
        for stats in history:
            for callback in self.callbacks:
                callback(stats)
        return float(saved["seconds"])

    # -- helpers ----------------------------------------------------------------------------------------------
    def _lr_factor(self, step: int, steps_per_epoch: int) -> float:
        """Linear warm-up over ``warmup_epochs``, then cosine decay to ``min_lr_ratio`` at the last epoch."""
        cfg = self.config
        warm = cfg.warmup_epochs * steps_per_epoch
        if step < warm:
            return (step + 1) / warm
        total = max(cfg.epochs * steps_per_epoch - warm, 1)
        progress = min((step - warm) / total, 1.0)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    @torch.no_grad()
    def predict_logits(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Logits ``(n, C)`` in eval mode, batched; returned on the CPU as float32."""
        self.model.eval()
        x = torch.as_tensor(x, dtype=torch.float32)
        bs = self.config.eval_batch_size
        with self._autocast():
            out = [self.model(x[i : i + bs].to(self.device)).float().cpu() for i in range(0, len(x), bs)]
        return torch.cat(out) if out else torch.empty(0, 0)

    def _precision(self) -> str:
        """What ran: bf16, fp32, or portable (fp32 with the kernels pinned)."""
        if self.autocast_dtype is not None:
            return "bf16"
        return PORTABLE if self.config.precision == PORTABLE else "fp32"

    def _autocast(self) -> torch.autocast:
        dtype = self.autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def _val_logits(self, x_val: np.ndarray) -> torch.Tensor:
        """Validation logits of the whole split; under DDP each rank scores its share and all gather the rest."""
        if not self.world.distributed:
            return self.predict_logits(x_val)
        distributed.broadcast_buffers(self.model)  # rank 0's batch-norm statistics everywhere: one model, one score
        idx = distributed.shard(len(x_val), self.world, shuffle=False)
        local = self.predict_logits(np.asarray(x_val)[idx.numpy()]).to(self.device)
        return distributed.all_gather_rows(local, len(x_val)).cpu()
