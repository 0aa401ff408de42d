"""The training loop's settings (:class:`TrainConfig`), torch-free: params.py's ``train`` schema is built from
:data:`TRAIN_LIMITS`, so a value is refused in the same words before a stage starts and when the loop is built."""

from __future__ import annotations

from dataclasses import dataclass

from speciesclf.choices import DEVICES, PRECISIONS
from speciesclf.limits import Limit, one_of, refusal

__all__ = ["TRAIN_LIMITS", "TrainConfig"]

# each numeric TrainConfig key's range; the keys params.yaml's `train` section has take the same one there
TRAIN_LIMITS: dict[str, Limit] = {
    "epochs": Limit(1, 10000, integer=True),
    "batch_size": Limit(1, 65536, integer=True),
    "lr": Limit(0, 10, lower_open=True),
    "weight_decay": Limit(0, 10),
    "warmup_epochs": Limit(0, 10000, integer=True),
    "min_lr_ratio": Limit(0, 1),
    "patience": Limit(1, 10000, integer=True),
    "grad_clip": Limit(0, lower_open=True, optional=True),
    "eval_batch_size": Limit(1, integer=True),
}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    min_lr_ratio: float = 0.01  # cosine decay ends at lr * min_lr_ratio
    patience: int = 7  # epochs without a better validation macro-F1 before stopping
    grad_clip: float | None = 5.0
    eval_batch_size: int = 256
    device: str = "auto"  # one of DEVICES
    precision: str = "auto"  # auto | fp32 | bf16 (autocast) | portable; auto = bf16 where the hardware has it
    channels_last: bool = True  # NHWC convolutions: faster on CPU (oneDNN) and on tensor cores
    seed: int = 0

    def __post_init__(self) -> None:
        for key, limit in TRAIN_LIMITS.items():
            if not limit.admits(getattr(self, key)):
                raise ValueError(refusal(f"train.{key}", getattr(self, key), limit.rule))
        for key, options in (("device", DEVICES), ("precision", PRECISIONS)):
            if getattr(self, key) not in options:
                raise ValueError(refusal(f"train.{key}", getattr(self, key), one_of(options)))
