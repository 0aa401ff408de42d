"""Tests for speciesclf.training.trainer: a real (tiny) training run, its saved weights, determinism, early
stopping, the learning-rate schedule, the non-finite loss guard and configuration checks."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn

from speciesclf.models.cnn import AudioCNN
from speciesclf.models.saved import load_weights, save_weights
from speciesclf.training.config import TrainConfig
from speciesclf.training.trainer import (
    EpochStats,
    NonFiniteLossError,
    Trainer,
    TrainResult,
    has_fast_bf16,
    resolve_device,
    resolve_precision,
)

N_CLASSES, N_MFCC, FRAMES = 4, 20, 64
CONFIG = TrainConfig(
    epochs=4, batch_size=16, lr=3e-3, warmup_epochs=1, patience=10, device="cpu", precision="fp32", seed=0
)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels; each class adds its own per-coefficient offset to Gaussian noise (learnable)."""
    pattern = np.random.default_rng(1234).standard_normal((N_CLASSES, N_MFCC, 1))
    rng = np.random.default_rng(seed)
    y = np.arange(n) % N_CLASSES
    x = rng.standard_normal((n, N_MFCC, FRAMES)) + 1.5 * pattern[y]
    return x.astype(np.float32), y.astype(np.int64)


@dataclass
class Run:
    trainer: Trainer
    result: TrainResult
    checkpoint: Path
    stats: list[EpochStats]
    lines: list[str]


def _train(checkpoint: Path, config: TrainConfig = CONFIG, **kwargs: Any) -> Run:
    x_train, y_train = _data(96, seed=0)
    x_val, y_val = _data(32, seed=1)
    torch.manual_seed(config.seed)  # the initial weights are part of what a seed fixes
    stats: list[EpochStats] = []
    lines: list[str] = []
    trainer = Trainer(AudioCNN(N_CLASSES), config=config, callbacks=[stats.append], log=lines.append, **kwargs)
    result = trainer.fit(x_train, y_train, x_val, y_val)
    save_weights(trainer.model, checkpoint, best_epoch=result.best_epoch)
    return Run(trainer, result, checkpoint, stats, lines)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _train(tmp_path_factory.mktemp("run") / "ckpt" / "model.pt")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_training_lowers_loss(run: Run) -> None:
    history = run.result.history
    assert run.result.epochs_run == len(history) == CONFIG.epochs
    assert not run.result.stopped_early
    assert history[-1].train_loss < history[0].train_loss
    assert all(np.isfinite([h.train_loss, h.val_loss]).all() for h in history)
    assert run.result.best_val_f1_macro > 1 / N_CLASSES  # better than chance on a learnable problem
    assert run.result.device == "cpu"


def test_best_epoch_is_first_max_of_val_f1(run: Run) -> None:
    f1s = [h.val_f1_macro for h in run.result.history]
    assert run.result.best_epoch == int(np.argmax(f1s)) + 1
    assert run.result.best_val_f1_macro == max(f1s)


def test_checkpoint_holds_restored_best_weights(run: Run) -> None:
    ckpt = load_weights(run.checkpoint)
    assert ckpt["best_epoch"] == run.result.best_epoch
    state = run.trainer.model.state_dict()
    assert ckpt["model_state"].keys() == state.keys()
    for key, value in state.items():
        assert ckpt["model_state"][key].device.type == "cpu"
        assert torch.equal(ckpt["model_state"][key], value), key
    # the weights in memory are the best epoch's: they reproduce that epoch's validation F1
    x_val, y_val = _data(32, seed=1)
    pred = run.trainer.predict_logits(x_val).argmax(dim=1).numpy()
    f1 = f1_score(y_val, pred, labels=np.unique(y_val), average="macro", zero_division=0)
    assert f1 == pytest.approx(run.result.history[run.result.best_epoch - 1].val_f1_macro)
    # and a fresh model loaded from the checkpoint predicts the same
    fresh = AudioCNN(N_CLASSES)
    fresh.load_state_dict(ckpt["model_state"])
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(torch.from_numpy(x_val)), run.trainer.predict_logits(x_val))
    assert [p.name for p in run.checkpoint.parent.iterdir()] == ["model.pt"]  # no temporary file left behind


def test_callbacks_once_per_epoch(run: Run) -> None:
    assert len(run.stats) == run.result.epochs_run
    assert all(isinstance(s, EpochStats) for s in run.stats)
    assert [s.epoch for s in run.stats] == list(range(1, run.result.epochs_run + 1))
    assert run.stats == run.result.history
    assert all(s.seconds >= 0 and s.peak_memory_mb > 0 for s in run.stats)
    assert all(0 <= s.val_accuracy <= 1 and 0 <= s.val_f1_macro <= 1 for s in run.stats)


def test_log_one_line_per_epoch(run: Run) -> None:
    assert len(run.lines) == run.result.epochs_run
    best = -1.0
    for epoch, (line, stats) in enumerate(zip(run.lines, run.result.history, strict=True), start=1):
        assert "\n" not in line
        assert line.startswith(f"epoch {epoch:3d}/{CONFIG.epochs} train_loss {stats.train_loss:.4f} ")
        assert line.endswith(" *") == (stats.val_f1_macro > best)  # the star marks a new best epoch
        best = max(best, stats.val_f1_macro)


def test_same_seed_gives_identical_checkpoint(run: Run, tmp_path: Path) -> None:
    again = _train(tmp_path / "model.pt")
    assert _sha256(again.checkpoint) == _sha256(run.checkpoint)
    strip = [(h.epoch, h.train_loss, h.val_loss, h.val_f1_macro, h.lr) for h in run.result.history]
    assert [(h.epoch, h.train_loss, h.val_loss, h.val_f1_macro, h.lr) for h in again.result.history] == strip


def test_other_seed_gives_other_checkpoint(run: Run, tmp_path: Path) -> None:
    other = _train(tmp_path / "model.pt", config=replace(CONFIG, seed=1))
    assert _sha256(other.checkpoint) != _sha256(run.checkpoint)


def test_checkpoint_bytes_do_not_depend_on_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    save_weights(model, tmp_path / "a.pt", best_epoch=3)
    save_weights(model, tmp_path / "sub" / "b.pt", best_epoch=3)
    assert _sha256(tmp_path / "a.pt") == _sha256(tmp_path / "sub" / "b.pt")


class ConstantModel(nn.Module):
    """Logits that ignore the input: every clip gets the same prediction, so validation F1 can never change."""

    def __init__(self, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1)


def _fit_constant(config: TrainConfig, **kwargs: Any) -> TrainResult:
    x_train, y_train = _data(48, seed=0)
    x_val, y_val = _data(16, seed=1)
    return Trainer(ConstantModel(), config=config, log=None, **kwargs).fit(x_train, y_train, x_val, y_val)


@pytest.mark.parametrize("patience", [1, 3])
def test_early_stopping(patience: int) -> None:
    config = TrainConfig(epochs=10, batch_size=16, lr=1e-2, warmup_epochs=0, patience=patience, device="cpu")
    result = _fit_constant(config)
    # one species predicted for all four balanced ones: macro-F1 = (2/5) / 4, the same every epoch
    assert [h.val_f1_macro for h in result.history] == [pytest.approx(0.1)] * result.epochs_run
    assert result.best_epoch == 1
    assert result.epochs_run == 1 + patience < config.epochs
    assert result.stopped_early


def test_no_early_stop_when_patience_not_reached() -> None:
    config = TrainConfig(epochs=3, batch_size=16, warmup_epochs=0, patience=3, device="cpu")
    result = _fit_constant(config)
    assert result.epochs_run == 3
    assert not result.stopped_early


def test_lr_schedule_warmup_then_cosine() -> None:
    config = TrainConfig(epochs=5, batch_size=16, lr=1e-2, warmup_epochs=2, patience=100, device="cpu")
    lrs = [h.lr for h in _fit_constant(config).history]  # 48 clips / 16 = 3 steps per epoch
    assert lrs[0] == pytest.approx(1e-2 * 1 / 6)  # warm-up starts low
    assert lrs[1] == pytest.approx(1e-2 * 4 / 6)
    assert lrs[2] == pytest.approx(1e-2)  # peak at the base rate when warm-up ends
    assert lrs[0] < lrs[1] < lrs[2] > lrs[3] > lrs[4]
    assert lrs[4] >= 1e-2 * config.min_lr_ratio


def test_lr_schedule_without_warmup_starts_at_base() -> None:
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-2, warmup_epochs=0, patience=100, device="cpu")
    lrs = [h.lr for h in _fit_constant(config).history]
    assert lrs[0] == pytest.approx(1e-2)
    assert lrs[0] > lrs[1] > lrs[2]


def test_lr_factor_shape() -> None:
    config = TrainConfig(epochs=10, warmup_epochs=2, min_lr_ratio=0.05, device="cpu")
    trainer = Trainer(ConstantModel(), config=config, log=None)
    steps = 7
    factors = [trainer._lr_factor(s, steps) for s in range(10 * steps)]
    warm = 2 * steps
    assert all(0 < f < 1 for f in factors[: warm - 1])
    assert factors[warm - 1] == pytest.approx(1.0)
    assert factors[warm] == pytest.approx(1.0)
    assert np.all(np.diff(factors[:warm]) > 0)
    assert np.all(np.diff(factors[warm:]) < 0)
    assert trainer._lr_factor(10 * steps, steps) == pytest.approx(0.05)  # the end of the cosine
    assert min(factors) >= 0.05


class NaNFromCall(nn.Module):
    """Cross-entropy, except that every call from the ``first``-th on (1-based) returns NaN."""

    def __init__(self, first: int) -> None:
        super().__init__()
        self.first, self.calls = first, 0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = F.cross_entropy(logits, target)
        return loss * float("nan") if self.calls >= self.first else loss


def _fit_diverging(first_nan_call: int) -> tuple[Trainer, TrainResult, list[dict], list[str]]:
    """AudioCNN, 3 batches an epoch, whose loss turns NaN at the given call; the weights after every epoch."""
    x_train, y_train = _data(48, seed=0)
    x_val, y_val = _data(16, seed=1)
    config = TrainConfig(epochs=4, batch_size=16, warmup_epochs=0, patience=10, device="cpu", precision="fp32")
    torch.manual_seed(0)
    trainer = Trainer(AudioCNN(N_CLASSES), NaNFromCall(first_nan_call), config, log=(lines := []).append)
    weights = [{k: v.clone() for k, v in trainer.model.state_dict().items()}]  # epoch 0: the initial weights
    trainer.callbacks.append(lambda _: weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()}))
    return trainer, trainer.fit(x_train, y_train, x_val, y_val), weights, lines


def test_a_loss_that_turns_non_finite_ends_training_and_keeps_the_best_epoch() -> None:
    trainer, result, weights, lines = _fit_diverging(first_nan_call=5)  # epoch 2's second batch
    assert result.diverged == "non-finite training loss (nan) at epoch 2, batch 1"
    assert result.epochs_run == 1 and result.best_epoch == 1 and result.stopped_early
    assert all(np.isfinite(h.train_loss) and np.isfinite(h.val_loss) for h in result.history)
    kept = trainer.model.state_dict()
    assert all(torch.equal(kept[k], weights[1][k]) for k in kept)
    assert lines[-1] == f"training diverged: {result.diverged}; stopping with epoch 1's weights"


def test_a_run_that_diverges_in_its_first_epoch_keeps_its_initial_weights() -> None:
    trainer, result, weights, lines = _fit_diverging(first_nan_call=3)  # epoch 1's third batch
    assert result.diverged.endswith("at epoch 1, batch 2")
    assert result.epochs_run == 0 and result.best_epoch == 0 and result.history == []
    kept = trainer.model.state_dict()
    assert all(torch.equal(kept[k], weights[0][k]) for k in kept)
    assert lines == [f"training diverged: {result.diverged}; stopping with the initial weights (no epoch finished)"]


def test_a_non_finite_loss_before_any_update_stops_with_epoch_and_batch() -> None:
    config = TrainConfig(epochs=3, batch_size=16, warmup_epochs=0, device="cpu")
    with pytest.raises(NonFiniteLossError, match=r"^non-finite training loss \(nan\) at epoch 1, batch 0$"):
        _fit_constant(config, loss_fn=NaNFromCall(first=1))


def test_infinite_features_stop_training() -> None:
    x_train, y_train = _data(48, seed=0)
    x_val, y_val = _data(16, seed=1)
    x_train[:, 3, 10] = np.inf  # every window: the first batch already fails
    config = TrainConfig(epochs=2, batch_size=16, warmup_epochs=0, device="cpu")
    trainer = Trainer(AudioCNN(N_CLASSES), config=config, log=None)
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, batch 0$"):
        trainer.fit(x_train, y_train, x_val, y_val)


def test_log_prints_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    config = TrainConfig(epochs=3, batch_size=16, warmup_epochs=1, patience=100, device="cpu")
    x_train, y_train = _data(48, seed=0)
    x_val, y_val = _data(16, seed=1)
    Trainer(ConstantModel(), config=config).fit(x_train, y_train, x_val, y_val)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all(re.match(rf"epoch +{i}/3 train_loss \d", line) for i, line in enumerate(lines, start=1))


def test_log_none_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    _fit_constant(TrainConfig(epochs=2, batch_size=16, warmup_epochs=0, device="cpu"))
    assert capsys.readouterr().out == ""


def test_empty_sets_rejected() -> None:
    x, y = _data(8, seed=0)
    trainer = Trainer(ConstantModel(), config=replace(CONFIG, epochs=1), log=None)
    with pytest.raises(ValueError, match="non-empty"):
        trainer.fit(x, y, x[:0], y[:0])
    with pytest.raises(ValueError, match="non-empty"):
        trainer.fit(x[:0], y[:0], x, y)


def test_predict_logits_batched() -> None:
    torch.manual_seed(0)
    trainer = Trainer(AudioCNN(N_CLASSES), config=replace(CONFIG, eval_batch_size=3), log=None)
    x, _ = _data(7, seed=0)
    logits = trainer.predict_logits(x)
    assert logits.shape == (7, N_CLASSES) and logits.dtype == torch.float32
    # batching does not change the result (eval mode)
    whole = Trainer(trainer.model, config=replace(CONFIG, eval_batch_size=256), log=None).predict_logits(x)
    torch.testing.assert_close(logits, whole, rtol=1e-4, atol=1e-5)
    assert trainer.predict_logits(x[:0]).shape == (0, 0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("epochs", 0),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", -1e-3),
        ("weight_decay", -0.1),
        ("warmup_epochs", -1),
        ("min_lr_ratio", 1.5),
        ("patience", 0),
        ("grad_clip", 0.0),
        ("eval_batch_size", 0),
        ("device", "tpu"),
        ("precision", "fp16"),
    ],
)
def test_train_config_invalid(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"^train\.{key}: got {value!r}; allowed: "):
        TrainConfig(**{key: value})


def test_train_config_grad_clip_none_ok() -> None:
    assert TrainConfig(grad_clip=None).grad_clip is None


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="tpu"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_resolve_device_cuda_unavailable() -> None:
    with pytest.raises(ValueError, match="cuda"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="cuda"):
        Trainer(ConstantModel(), config=TrainConfig(device="cuda"))


@pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="needs a machine without accelerators"
)
def test_resolve_device_auto_falls_back_to_cpu() -> None:
    assert resolve_device("auto") == torch.device("cpu")


def test_bf16_autocast_trains_and_is_deterministic(tmp_path: Path) -> None:
    """bf16 autocast (AMX on this CPU where present) still learns, and repeats bit for bit on CPU."""
    config = TrainConfig(epochs=3, batch_size=16, lr=3e-3, warmup_epochs=0, device="cpu", precision="bf16", seed=0)
    x, y = _data(64, seed=0)
    digests = []
    for k in range(2):
        torch.manual_seed(0)
        trainer = Trainer(AudioCNN(N_CLASSES), config=config, log=None)
        result = trainer.fit(x, y, x[:32], y[:32])
        save_weights(trainer.model, tmp_path / f"bf16_{k}.pt", best_epoch=result.best_epoch)
        assert result.precision == "bf16"
        assert result.history[-1].train_loss < result.history[0].train_loss
        digests.append(hashlib.sha256((tmp_path / f"bf16_{k}.pt").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_precision_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("auto", cpu) is (torch.bfloat16 if has_fast_bf16(cpu) else None)
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", cpu)
    with pytest.raises(ValueError, match=r"train\.precision"):
        TrainConfig(precision="fp16")


@pytest.mark.parametrize("compiler_loaded", [False, True])
def test_seed_all_turns_on_deterministic_kernels(compiler_loaded: bool) -> None:
    """In a fresh interpreter, as a stage runs: the global switch is on, strict on CPU, and the compiler is left
    unloaded unless something had loaded it already (then torch's public call sets its flag too)."""
    code = (
        "import sys, torch\n"
        + ("import torch._inductor.config\n" if compiler_loaded else "")
        + "from speciesclf.training.trainer import seed_all\n"
        "assert not torch.are_deterministic_algorithms_enabled()\n"
        "seed_all(0)\n"
        "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),"
        " 'torch._inductor' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False", str(compiler_loaded)]


COUNTS = [40, 10, 5, 1]


def _by_hand(name: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each loss from its formula, independent of speciesclf.models.losses."""
    n = torch.tensor(COUNTS, dtype=torch.float64)
    if name == "cross_entropy":
        return F.cross_entropy(logits, y, label_smoothing=0.1)
    if name == "class_weighted":  # w_c ∝ n_c^-0.5, summing to C
        w = n**-0.5
        return F.cross_entropy(logits, y, weight=(w * len(n) / w.sum()).float(), label_smoothing=0.1)
    if name == "logit_adjusted":  # CE(z + τ log π), τ = 2
        return F.cross_entropy(logits + 2.0 * (n / n.sum()).log().float(), y, label_smoothing=0.1)
    if name == "balanced_softmax":  # CE(z + log n)
        return F.cross_entropy(logits + n.log().float(), y, label_smoothing=0.1)
    p = F.softmax(logits, 1).gather(1, y[:, None])[:, 0]  # focal, γ = 2, α = 0.25, no smoothing
    return (-0.25 * (1 - p) ** 2 * p.log()).mean()


@pytest.mark.parametrize("name", ["cross_entropy", "focal", "class_weighted", "logit_adjusted", "balanced_softmax"])
def test_build_loss_makes_the_loss_its_name_and_keys_ask_for(name: str) -> None:
    from speciesclf.models.losses import build_loss

    keys = {
        "focal": {"gamma": 2.0, "alpha": 0.25},
        "class_weighted": {"power": 0.5, "label_smoothing": 0.1},
        "logit_adjusted": {"tau": 2.0, "label_smoothing": 0.1},
    }.get(name, {"label_smoothing": 0.1})
    logits, y = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 4
    loss = build_loss({"name": name, **keys}, COUNTS)
    torch.testing.assert_close(loss(logits, y), _by_hand(name, logits, y))


def test_build_loss_without_a_name_is_the_studys_focal_loss_and_a_bad_name_is_refused() -> None:
    from speciesclf.models.losses import FocalLoss, build_loss

    assert isinstance(build_loss({"gamma": 2.0, "alpha": 0.25, "beta": 0.999}, COUNTS), FocalLoss)
    with pytest.raises(ValueError, match=r"^loss\.name: got 'focall'; allowed: one of cross_entropy, focal, "):
        build_loss({"name": "focall"}, COUNTS)
