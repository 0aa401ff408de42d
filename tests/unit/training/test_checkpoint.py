"""Resumable training (speciesclf.training.checkpoint): a run stopped after epoch k continues at k+1 and ends with
the same bytes as an uninterrupted one; a state made by another run is discarded; a finished run leaves none.

These stop a real in-process run by raising from its epoch callback (after the epoch's state is saved);
tests/integration/test_faults.py kills real stage processes with real signals.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from speciesclf.models.cnn import AudioCNN
from speciesclf.training.checkpoint import TrainingState, fingerprint
from speciesclf.training.config import TrainConfig
from speciesclf.training.trainer import EpochStats, Trainer

CONFIG = TrainConfig(
    epochs=5, batch_size=16, lr=3e-3, warmup_epochs=1, patience=10, device="cpu", precision="fp32", seed=0
)


class Killed(Exception):
    pass


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.standard_normal((n, 20, 48)) + np.random.default_rng(7).standard_normal((3, 20, 1))[y]
    return x.astype(np.float32), y.astype(np.int64)


def _train(state: TrainingState | None, config: TrainConfig = CONFIG, stop_after: int = 0) -> tuple[bytes, list]:
    """Train a small CNN (with dropout: the random streams matter); raise after epoch ``stop_after`` if > 0."""
    seen: list[EpochStats] = []

    def callback(stats: EpochStats) -> None:
        seen.append(stats)
        if stats.epoch == stop_after:
            raise Killed

    torch.manual_seed(0)
    trainer = Trainer(AudioCNN(n_classes=3), config=config, callbacks=[callback], log=None)
    trainer.fit(*_data(96, 1), *_data(24, 2), state=state)
    buf = io.BytesIO()
    torch.save(trainer.model.state_dict(), buf)
    return buf.getvalue(), seen


def test_a_run_stopped_at_epoch_k_resumes_at_k_plus_1_with_the_same_bytes(tmp_path: Path) -> None:
    reference, reference_epochs = _train(None)
    state = TrainingState(tmp_path / "state", "run-1", log=None)
    with pytest.raises(Killed):
        _train(state, stop_after=2)
    assert torch.load(state.path, weights_only=True)["history"][-1]["epoch"] == 2
    resumed, seen = _train(state)
    assert resumed == reference
    # the callbacks see epochs 1-2 replayed from the state, then 3-5 trained: curves run on unbroken
    assert [s.epoch for s in seen] == [1, 2, 3, 4, 5]
    assert [s.val_f1_macro for s in seen] == [s.val_f1_macro for s in reference_epochs]


def test_a_run_stopped_after_early_stopping_does_not_train_on(tmp_path: Path) -> None:
    config = replace(CONFIG, epochs=30, patience=1, lr=1e-5)  # too slow to improve every epoch: stops early
    reference, reference_epochs = _train(None, config)
    assert len(reference_epochs) < 30
    state = TrainingState(tmp_path / "state", "run-1", log=None)
    with pytest.raises(Killed):
        _train(state, config, stop_after=len(reference_epochs))  # after its last epoch, before the model is saved
    resumed, seen = _train(state, config)
    assert resumed == reference and len(seen) == len(reference_epochs)


def test_a_state_of_other_settings_or_a_broken_one_is_discarded(tmp_path: Path) -> None:
    messages: list[str] = []
    with pytest.raises(Killed):
        _train(TrainingState(tmp_path / "state", "params-A", log=None), stop_after=2)
    other = TrainingState(tmp_path / "state", "params-B", log=messages.append)
    with pytest.raises(Killed):
        _train(other, stop_after=1)  # starts afresh from epoch 1
    assert messages == [f"training state {other.path}: made with other params, data or code; starting from epoch 1"]
    other.path.write_bytes(b"truncated")
    assert other.load(torch.device("cpu")) is None and not other.folder.exists()
    assert "unreadable" in messages[-1]


def test_discard_removes_the_state_and_the_folders_it_emptied(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints" / "keep").mkdir(parents=True)
    state = TrainingState(Path("checkpoints/gamma_sweep/gamma_1.0"), "x", log=None)
    state.save({"epoch": 1})
    state.discard()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["keep"]
    (tmp_path / "checkpoints" / "keep").rmdir()
    TrainingState(Path("checkpoints/a"), "x", log=None).discard()
    assert not (tmp_path / "checkpoints").exists() and tmp_path.exists()


def test_the_fingerprint_follows_settings_and_file_content(tmp_path: Path) -> None:
    f = tmp_path / "train_x.npy"
    f.write_bytes(b"abc")
    first = fingerprint({"lr": 1e-3}, [f])
    assert fingerprint({"lr": 1e-3}, [f]) == first
    assert fingerprint({"lr": 2e-3}, [f]) != first
    f.write_bytes(b"abd")
    assert fingerprint({"lr": 1e-3}, [f]) != first
