"""On-the-fly augmentation of training batches ``(batch, bands, frames)``: SpecAugment masks, time shift, mixup.

Applied by the :class:`~speciesclf.training.trainer.Trainer` to each training batch (never to validation or test),
on the batch's device, from torch's seeded generator: the same params on the same machine give the same bytes.
Each knob is off at 0, and a config with every knob off draws no random numbers, so a run without augmentation is
exactly the run it was before augmentation existed.

- **Frequency and time masks** (SpecAugment, Park et al. 2019): ``masks`` bands of up to ``freq_mask`` rows and
  ``masks`` spans of up to ``time_mask`` frames, drawn per example (torchaudio's ``FrequencyMasking`` and
  ``TimeMasking`` with ``iid_masks``), set to 0: the training mean, since features are standardised.
- **Time shift**: each example rolled by up to ``time_shift`` frames either way (a call need not start where the
  window does; what leaves one end comes back at the other).
- **Mixup** (Zhang et al. 2018): with probability ``mixup_prob`` a batch becomes ``lam * x + (1 - lam) * x[perm]``,
  ``lam ~ Beta(mixup_alpha, mixup_alpha)``, and the loss ``lam * L(y) + (1 - lam) * L(y[perm])``, which works with
  any of the project's losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio

__all__ = ["AugmentConfig", "Augmenter", "Batch"]


@dataclass(frozen=True)
class AugmentConfig:
    """The ``augment`` params; every knob 0 = off."""

    freq_mask: int = 0  # widest frequency mask, in bands
    time_mask: int = 0  # widest time mask, in frames
    masks: int = 1  # masks of each kind per example
    time_shift: int = 0  # largest roll, in frames, either way
    mixup_alpha: float = 0.0  # Beta(α, α) of mixup's weight; 0 = no mixup
    mixup_prob: float = 1.0  # share of batches mixed when mixup_alpha > 0

    def __post_init__(self) -> None:
        checks = {
            "freq_mask": (self.freq_mask >= 0, "an integer >= 0 (bands)"),
            "time_mask": (self.time_mask >= 0, "an integer >= 0 (frames)"),
            "masks": (self.masks >= 1, "an integer >= 1"),
            "time_shift": (self.time_shift >= 0, "an integer >= 0 (frames)"),
            "mixup_alpha": (self.mixup_alpha >= 0, "a number >= 0 (0 turns mixup off)"),
            "mixup_prob": (0 <= self.mixup_prob <= 1, "a probability in [0, 1]"),
        }
        for key, (ok, rule) in checks.items():
            if not ok:
                raise ValueError(f"augment.{key}: invalid value {getattr(self, key)!r}; expected {rule}")

    @property
    def enabled(self) -> bool:
        return bool(self.freq_mask or self.time_mask or self.time_shift or self.mixup_alpha)

    def check_input(self, bands: int, frames: int) -> None:
        """Refuse masks or shifts the features cannot take, naming the key."""
        for key, size, limit, unit in (
            ("freq_mask", self.freq_mask, bands, "bands"),
            ("time_mask", self.time_mask, frames, "frames"),
            ("time_shift", self.time_shift, frames, "frames"),
        ):
            if size >= limit:
                raise ValueError(f"augment.{key}: {size} is not below the features' {limit} {unit}")


@dataclass
class Batch:
    """An augmented batch: inputs, labels, and for mixup the partner labels and the weight of ``y``."""

    x: torch.Tensor
    y: torch.Tensor
    y_mix: torch.Tensor | None = None
    lam: float = 1.0

    def loss(self, loss_fn: torch.nn.Module, logits: torch.Tensor) -> torch.Tensor:
        if self.y_mix is None:
            return loss_fn(logits, self.y)
        return self.lam * loss_fn(logits, self.y) + (1 - self.lam) * loss_fn(logits, self.y_mix)


class Augmenter:
    """Applies an :class:`AugmentConfig` to training batches (see the module doc)."""

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        self.freq_masking = torchaudio.transforms.FrequencyMasking(config.freq_mask, iid_masks=True)
        self.time_masking = torchaudio.transforms.TimeMasking(config.time_mask, iid_masks=True)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        cfg = self.config
        if not cfg.enabled:
            return Batch(x, y)
        if cfg.time_shift:
            x = _roll_each(x, cfg.time_shift)
        if cfg.freq_mask or cfg.time_mask:
            x = self._mask(x)
        if cfg.mixup_alpha and float(torch.rand(())) < cfg.mixup_prob:
            lam = float(torch.distributions.Beta(cfg.mixup_alpha, cfg.mixup_alpha).sample())
            perm = torch.randperm(len(x), device=x.device)
            return Batch(lam * x + (1 - lam) * x[perm], y, y[perm], lam)
        return Batch(x, y)

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        # the transforms want a channel axis for per-example masks: (batch, 1, bands, frames)
        x = x.unsqueeze(1)
        for _ in range(self.config.masks):
            if self.config.freq_mask:
                x = self.freq_masking(x)
            if self.config.time_mask:
                x = self.time_masking(x)
        return x.squeeze(1)


def _roll_each(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Roll each example of ``(batch, bands, frames)`` along time by its own shift in [-max_shift, max_shift]."""
    frames = x.shape[-1]
    shift = torch.randint(-max_shift, max_shift + 1, (len(x), 1), device=x.device)
    index = (torch.arange(frames, device=x.device) - shift) % frames  # (batch, frames)
    return torch.gather(x, -1, index[:, None, :].expand_as(x))
