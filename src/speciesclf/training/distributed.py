"""Data-parallel training across processes with PyTorch's DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc_per_node=N`` starts N copies of a script and gives each ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`session` turns those into a process group (gloo on CPU, nccl on CUDA). Without them every
function here degrades to the single-process case, so one code path serves both. The training stage can also start
torchrun itself (:func:`relaunch`) when ``train.processes`` > 1, which is how ``dvc repro`` runs it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from speciesclf import processes

__all__ = [
    "World",
    "all_gather_rows",
    "all_reduce_sum",
    "backend_for",
    "broadcast_buffers",
    "current",
    "launched",
    "relaunch",
    "session",
    "shard",
]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, checkpoints and writes outputs."""
        return self.rank == 0


def launched() -> bool:
    """True inside a process started by torchrun (or any launcher setting ``WORLD_SIZE``)."""
    return "WORLD_SIZE" in os.environ


def backend_for(device: torch.device) -> str:
    """nccl between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def current() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


@contextmanager
def session(device: torch.device) -> Iterator[World]:
    """A process group for the duration of the block when launched with ``WORLD_SIZE`` > 1, else a no-op.

    On CUDA each process takes the GPU of its ``LOCAL_RANK``.
    """
    size = int(os.environ.get("WORLD_SIZE", 1))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend_for(device))
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def relaunch(nproc: int, argv: Sequence[str] | None = None) -> int:
    """Run this script again under ``torchrun --standalone --nproc_per_node=nproc``; returns its exit code.

    ``--standalone`` runs a rendezvous on localhost with a free port, so parallel runs (a DVC queue) don't collide.
    """
    argv = list(sys.argv if argv is None else argv)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *argv]
    # torchrun dies with this process and forwards SIGTERM to its workers, which die with torchrun in turn
    launcher = subprocess.Popen(cmd, preexec_fn=processes.die_with_parent)
    try:
        return launcher.wait()
    except BaseException:  # Ctrl-C (torchrun got it too) or SIGTERM: let torchrun stop its workers, then go
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=60)
        raise


def shard(n: int, world: World, epoch: int = 0, seed: int = 0, shuffle: bool = True) -> torch.Tensor:
    """This rank's indices of ``range(n)`` for one epoch, as :class:`~torch.utils.data.DistributedSampler` deals them.

    Every rank gets the same number (the list is padded by repeating its head), so every rank runs the same number
    of batches: DDP's collective calls must match across ranks.
    """
    sampler = DistributedSampler(range(n), num_replicas=world.size, rank=world.rank, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (identity when not distributed)."""
    if current().distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """Reassemble the rows of a ``shard(n, shuffle=False)``-split tensor from every rank, in the original order.

    Rank r holds rows r, r + size, r + 2*size, ... (padded to equal length); the padding is cut off.
    """
    world = current()
    if not world.distributed:
        return local[:n]
    parts = [torch.empty_like(local) for _ in range(world.size)]
    dist.all_gather(parts, local.contiguous())
    # (size, m, ...) -> (m, size, ...): row i*size + r came from rank r's i-th row
    return torch.stack(parts).transpose(0, 1).reshape(-1, *local.shape[1:])[:n]


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics are updated per rank while training)."""
    if current().distributed:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)
