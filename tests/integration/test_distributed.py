"""Tests for speciesclf.distributed and the Trainer under DistributedDataParallel: real 2-process gloo groups.

The helpers fall back to the single-process case without a process group; the multi-process tests start two real
processes (``torch.multiprocessing.spawn``) that rendezvous on localhost, as torchrun's would.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from speciesclf.models.cnn import AudioCNN
from speciesclf.models.saved import load_weights, save_weights
from speciesclf.training import distributed
from speciesclf.training.config import TrainConfig
from speciesclf.training.distributed import World
from speciesclf.training.trainer import Trainer


@pytest.mark.parametrize("n,size", [(10, 1), (10, 2), (11, 2), (7, 3), (1, 2)])
def test_shards_are_equal_length_and_cover_every_index(n: int, size: int) -> None:
    shards = [distributed.shard(n, World(rank=r, size=size), epoch=3, seed=5) for r in range(size)]
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of batches
    assert len(shards[0]) == -(-n // size)
    assert set(torch.cat(shards).tolist()) == set(range(n))


def test_shard_order_is_seeded_per_epoch() -> None:
    world = World(rank=1, size=2)
    assert torch.equal(distributed.shard(50, world, epoch=1, seed=0), distributed.shard(50, world, epoch=1, seed=0))
    assert not torch.equal(distributed.shard(50, world, epoch=1, seed=0), distributed.shard(50, world, epoch=2, seed=0))
    unshuffled = distributed.shard(7, World(rank=0, size=2), shuffle=False)
    assert unshuffled.tolist() == [0, 2, 4, 6]


def test_backend_is_nccl_between_gpus_and_gloo_on_cpu() -> None:
    assert distributed.backend_for(torch.device("cuda", 0)) == "nccl"
    assert distributed.backend_for(torch.device("cpu")) == "gloo"


def test_single_process_fallbacks_without_a_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched()
    with distributed.session(torch.device("cpu")) as world:
        assert world == World() and world.is_main and not world.distributed
    t = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(distributed.all_reduce_sum(t.clone()), t)
    assert torch.equal(distributed.all_gather_rows(t, 2), t[:2])


# -- two real processes ---------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, out: Path, *args: object) -> None:  # type: ignore[no-untyped-def]
    port = _free_port()
    mp.spawn(fn, args=(2, port, out, *args), nprocs=2, join=True)


def _as_rank(rank: int, size: int, port: int) -> None:
    """The environment torchrun gives each process."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(size)
    )
    torch.set_num_threads(1)


def _collectives(rank: int, size: int, port: int, out: Path) -> None:
    _as_rank(rank, size, port)
    with distributed.session(torch.device("cpu")) as world:
        x = torch.arange(22.0).reshape(11, 2)  # 11 rows: the shards are padded to 6 each
        idx = distributed.shard(len(x), world, shuffle=False)
        gathered = distributed.all_gather_rows(x[idx], len(x))
        total = distributed.all_reduce_sum(torch.tensor([float(rank + 1)]))
        bn = torch.nn.BatchNorm1d(2)
        bn.running_mean.fill_(float(rank))  # rank-specific statistics, as after a DDP training step
        distributed.broadcast_buffers(bn)
        result = {
            "world": [world.rank, world.size, world.is_main],
            "gathered_ok": bool(torch.equal(gathered, x)),
            "total": total.item(),
            "running_mean": bn.running_mean.tolist(),
        }
    (out / f"rank{rank}.json").write_text(json.dumps(result))


@pytest.mark.scale
def test_collectives_across_two_gloo_processes(tmp_path: Path) -> None:
    _spawn(_collectives, tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [[0, 2, True], [1, 2, False]]
    assert all(r["gathered_ok"] for r in ranks)  # every rank gets all rows back in the original order
    assert [r["total"] for r in ranks] == [3.0, 3.0]
    assert [r["running_mean"] for r in ranks] == [[0.0, 0.0], [0.0, 0.0]]  # rank 0's statistics everywhere


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    pattern = np.random.default_rng(1234).standard_normal((4, 20, 1))
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    return (rng.standard_normal((n, 20, 48)) + 1.5 * pattern[y]).astype(np.float32), y.astype(np.int64)


def _train(rank: int, size: int, port: int, out: Path) -> None:
    _as_rank(rank, size, port)
    with distributed.session(torch.device("cpu")) as world:
        x, y = _data(90, seed=0)  # 45 per rank: the last batch of each shard is a partial one
        xv, yv = _data(21, seed=1)
        torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
        config = TrainConfig(
            epochs=4, batch_size=16, lr=3e-3, warmup_epochs=1, patience=10, device="cpu", precision="fp32", seed=0
        )
        calls: list[int] = []
        callbacks = [lambda s: calls.append(s.epoch)] if world.is_main else []  # as the training stage does
        trainer = Trainer(AudioCNN(4), config=config, callbacks=callbacks, log=None)
        result = trainer.fit(x, y, xv, yv)
        if world.is_main:
            save_weights(trainer.model, out / "ckpt.pt", best_epoch=result.best_epoch)
        state = {k: v.tolist() for k, v in trainer.model.state_dict().items()}
        history = {"losses": [h.train_loss for h in result.history], "val_f1": [h.val_f1_macro for h in result.history]}
        summary = {"world_size": result.world_size, "callbacks": calls, "state": state, **history}
        (out / f"rank{rank}.json").write_text(json.dumps(summary))


@pytest.mark.scale
def test_trainer_under_ddp_keeps_ranks_in_step(tmp_path: Path) -> None:
    _spawn(_train, tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["state"] == ranks[1]["state"]  # identical weights and batch-norm statistics on both ranks
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the training loss is reduced across ranks
    assert ranks[0]["val_f1"] == ranks[1]["val_f1"]  # so is validation: both take the same early-stopping path
    assert ranks[0]["losses"][-1] < ranks[0]["losses"][0]
    assert ranks[0]["callbacks"] == [1, 2, 3, 4]  # once per epoch, whatever the other rank does
    saved = load_weights(tmp_path / "ckpt.pt")["model_state"]
    assert all(saved[k].tolist() == v for k, v in ranks[0]["state"].items())
