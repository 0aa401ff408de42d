"""On-the-fly augmentation of training batches ``(batch, bands, frames)``: a random crop from the recording,
SpecAugment masks, time shift, random gain, background from other windows, mixup.

Applied by the :class:`~speciesclf.training.trainer.Trainer` to each training batch (never to validation or test),
on the batch's device, from torch's seeded generator: the same params on the same machine give the same bytes.
Each knob is off at 0, and a config with every knob off draws no random numbers, so a run without augmentation is
exactly the run it was before augmentation existed.

- **Random crop**: each example becomes a new window of its recording, starting up to one training hop later
  (``random_crop``). The features of a longer recording are its windows, cut every training hop; a window and the
  next one of the same recording together hold the frames of every window that starts between them, so the crop
  is taken from those two (:class:`WindowChain`), a fresh one each epoch. Exact up to the STFT's padding at window
  edges (a frame within ``n_fft / 2`` of an edge saw reflected samples). A window without a next one at a full hop
  stays as it is: the last of a recording, and the one before it too, since the last window is aligned to the
  recording's end and may start less than a hop on.
- **Frequency and time masks** (SpecAugment, Park et al. 2019): ``masks`` bands of up to ``freq_mask`` rows and
  ``masks`` spans of up to ``time_mask`` frames, drawn per example (torchaudio's ``FrequencyMasking`` and
  ``TimeMasking`` with ``iid_masks``), set to 0: the training mean, since features are standardised.
- **Time shift**: each example rolled by up to ``time_shift`` frames either way (a call need not start where the
  window does; what leaves one end comes back at the other).
- **Random gain**: each example louder or quieter by up to ``gain_db`` either way, as a recorder's level or an
  animal's distance would make it.
- **Background**: a share ``background_prob`` of the examples get another training example of the batch mixed in
  at an SNR drawn from ``background_snr_db`` (another recording's sounds, fainter), keeping their own label.

  Both act on the decibels the features stand for, so they need log-mel features (dB) and the training
  normalisation to undo (:class:`DecibelScale`): a gain adds ``g`` dB to every bin, and the background is added
  in power, ``10 log10(P + s P')``, with ``s`` scaling the partner's mean power to the drawn SNR below the
  example's.
- **Mixup** (Zhang et al. 2018): with probability ``mixup_prob`` a batch becomes ``lam * x + (1 - lam) * x[perm]``,
  ``lam ~ Beta(mixup_alpha, mixup_alpha)``, and the loss ``lam * L(y) + (1 - lam) * L(y[perm])``, which works with
  any of the project's losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio

__all__ = ["AugmentConfig", "Augmenter", "Batch", "DecibelScale", "WindowChain"]


@dataclass(frozen=True)
class AugmentConfig:
    """The ``augment`` params; every knob 0 (or false) = off."""

    random_crop: bool = False  # a new window of the recording per epoch, up to one training hop later
    freq_mask: int = 0  # widest frequency mask, in bands
    time_mask: int = 0  # widest time mask, in frames
    masks: int = 1  # masks of each kind per example
    time_shift: int = 0  # largest roll, in frames, either way
    mixup_alpha: float = 0.0  # Beta(α, α) of mixup's weight; 0 = no mixup
    mixup_prob: float = 1.0  # share of batches mixed when mixup_alpha > 0
    gain_db: float = 0.0  # largest random gain, in dB, either way
    background_prob: float = 0.0  # share of examples with another one mixed in as background
    background_snr_db: tuple[float, float] = (10.0, 30.0)  # [low, high] SNR of that background, dB

    def __post_init__(self) -> None:
        object.__setattr__(self, "background_snr_db", tuple(self.background_snr_db))  # a list from params.yaml
        checks = {
            "freq_mask": (self.freq_mask >= 0, "an integer >= 0 (bands)"),
            "time_mask": (self.time_mask >= 0, "an integer >= 0 (frames)"),
            "masks": (self.masks >= 1, "an integer >= 1"),
            "time_shift": (self.time_shift >= 0, "an integer >= 0 (frames)"),
            "mixup_alpha": (self.mixup_alpha >= 0, "a number >= 0 (0 turns mixup off)"),
            "mixup_prob": (0 <= self.mixup_prob <= 1, "a probability in [0, 1]"),
            "gain_db": (self.gain_db >= 0, "a number >= 0 (dB; 0 turns the gain off)"),
            "background_prob": (0 <= self.background_prob <= 1, "a probability in [0, 1]"),
            "background_snr_db": (_snr_range(self.background_snr_db), "[low, high] in dB with low <= high"),
        }
        for key, (ok, rule) in checks.items():
            if not ok:
                raise ValueError(f"augment.{key}: invalid value {getattr(self, key)!r}; expected {rule}")

    @property
    def enabled(self) -> bool:
        return bool(
            self.random_crop
            or self.freq_mask
            or self.time_mask
            or self.time_shift
            or self.mixup_alpha
            or self.in_decibels
        )

    @property
    def in_decibels(self) -> bool:
        """Whether a knob is on that works on the decibels behind the features (gain, background)."""
        return bool(self.gain_db or self.background_prob)

    def check_front_end(self, front_end: str) -> None:
        """Refuse gain or background on features that are not log-mel decibels, and a random crop of an embedding
        (it has no frames to cut), naming the key."""
        if self.random_crop and front_end == "birdnet":
            raise ValueError("augment.random_crop: needs spectrogram frames; the features are birdnet embeddings")
        if self.in_decibels and front_end != "logmel":
            key = "gain_db" if self.gain_db else "background_prob"
            raise ValueError(f"augment.{key}: works on log-mel features (dB); the features are {front_end}")

    def check_input(self, bands: int, frames: int) -> None:
        """Refuse masks or shifts the features cannot take, naming the key."""
        for key, size, limit, unit in (
            ("freq_mask", self.freq_mask, bands, "bands"),
            ("time_mask", self.time_mask, frames, "frames"),
            ("time_shift", self.time_shift, frames, "frames"),
        ):
            if size >= limit:
                raise ValueError(f"augment.{key}: {size} is not below the features' {limit} {unit}")


def _snr_range(snr: tuple[float, ...]) -> bool:
    return len(snr) == 2 and snr[0] <= snr[1]


@dataclass(frozen=True)
class WindowChain:
    """How a split's windows continue one another: ``has_next[i]`` when window ``i + 1`` is the same recording's
    window starting ``hop_frames`` frames after window ``i`` (a training hop, at most one window)."""

    has_next: torch.Tensor  # (windows,) bool
    hop_frames: int

    @classmethod
    def from_windows(cls, files: list[str], positions: list[int], hop_frames: int) -> WindowChain:
        """From each window's file and position in it, in split order (the feature store's ``windows.csv``).

        The last two windows of a file have no next one at a full hop (see the module doc).
        """
        n = len(files)
        has_next = [i + 2 < n and files[i + 2] == files[i] and positions[i + 2] == positions[i] + 2 for i in range(n)]
        return cls(torch.tensor(has_next, dtype=torch.bool), hop_frames)

    def check_input(self, windows: int, frames: int) -> None:
        if len(self.has_next) != windows:
            raise ValueError(f"augment.random_crop: the window order has {len(self.has_next)} windows, not {windows}")
        if not 0 < self.hop_frames <= frames:
            raise ValueError(f"augment.random_crop: a training hop of {self.hop_frames} frames; expected 1 to {frames}")

    def to(self, device: torch.device) -> WindowChain:
        return WindowChain(self.has_next.to(device), self.hop_frames)

    def crop(self, windows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Windows ``windows[idx]`` ``(batch, bands, frames)`` each moved on by a random ``o`` in
        ``[0, hop_frames)`` frames, the frames past the end coming from the next window (``o = 0`` without one)."""
        x = windows[idx]
        n, bands, frames = x.shape
        offset = torch.randint(0, self.hop_frames, (n,), device=x.device) * self.has_next[idx]  # drawn for all
        tail = windows[(idx + 1).clamp(max=len(windows) - 1), :, frames - self.hop_frames :]
        joined = torch.cat([x, tail], dim=-1)  # from x's start to the next window's end: the next starts a hop in
        index = offset[:, None] + torch.arange(frames, device=x.device)  # (batch, frames)
        return torch.gather(joined, -1, index[:, None, :].expand(n, bands, frames))


@dataclass(frozen=True)
class DecibelScale:
    """How standardised features map back to decibels: ``dB = x * std + mean``, per band ``(bands,)``."""

    mean: torch.Tensor
    std: torch.Tensor

    def to_db(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std.to(x.device)[:, None] + self.mean.to(x.device)[:, None]

    def from_db(self, db: torch.Tensor) -> torch.Tensor:
        return (db - self.mean.to(db.device)[:, None]) / self.std.to(db.device)[:, None]


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

    def __init__(self, config: AugmentConfig, decibels: DecibelScale | None = None) -> None:
        if config.in_decibels and decibels is None:
            raise ValueError("augment: gain and background need the features' decibel scale (log-mel features)")
        self.config = config
        self.decibels = decibels
        self.freq_masking = torchaudio.transforms.FrequencyMasking(config.freq_mask, iid_masks=True)
        self.time_masking = torchaudio.transforms.TimeMasking(config.time_mask, iid_masks=True)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        """Augment a batch (a random crop is the Trainer's: it needs the next windows, see :class:`WindowChain`)."""
        cfg = self.config
        if not cfg.enabled:
            return Batch(x, y)
        if cfg.time_shift:
            x = _roll_each(x, cfg.time_shift)
        if cfg.in_decibels:
            x = self._in_decibels(x)
        if cfg.freq_mask or cfg.time_mask:
            x = self._mask(x)
        if cfg.mixup_alpha and float(torch.rand(())) < cfg.mixup_prob:
            lam = float(torch.distributions.Beta(cfg.mixup_alpha, cfg.mixup_alpha).sample())
            perm = torch.randperm(len(x), device=x.device)
            return Batch(lam * x + (1 - lam) * x[perm], y, y[perm], lam)
        return Batch(x, y)

    def _in_decibels(self, x: torch.Tensor) -> torch.Tensor:
        """Random gain, then background from a partner in the batch, on the decibels the features stand for."""
        scale, cfg = self.decibels, self.config
        db = scale.to_db(x)
        if cfg.gain_db:
            db = db + (2 * torch.rand(len(x), 1, 1, device=x.device) - 1) * cfg.gain_db
        if cfg.background_prob:
            db = _mix_background(db, cfg.background_prob, cfg.background_snr_db)
        return scale.from_db(db).to(x.dtype)

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        # the transforms want a channel axis for per-example masks: (batch, 1, bands, frames)
        x = x.unsqueeze(1)
        for _ in range(self.config.masks):
            if self.config.freq_mask:
                x = self.freq_masking(x)
            if self.config.time_mask:
                x = self.time_masking(x)
        return x.squeeze(1)


def _mix_background(db: torch.Tensor, prob: float, snr_db: tuple[float, float]) -> torch.Tensor:
    """``10 log10(P + s P[partner])`` for a share ``prob`` of the examples ``(batch, bands, frames)`` in dB, ``s``
    putting the partner's mean power ``snr`` dB below the example's, ``snr`` uniform in ``snr_db``."""
    n = len(db)
    chosen = torch.rand(n, device=db.device) < prob
    partner = torch.randperm(n, device=db.device)
    snr = snr_db[0] + (snr_db[1] - snr_db[0]) * torch.rand(n, device=db.device)
    power = torch.pow(10.0, db.double() / 10)  # float64: -100 dB bins stay representable beside loud ones
    level = power.mean(dim=(1, 2))
    s = level / level[partner] * torch.pow(10.0, -snr.double() / 10)
    mixed = 10 * torch.log10(power + s[:, None, None] * power[partner])
    return torch.where(chosen[:, None, None], mixed.to(db.dtype), db)


def _roll_each(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Roll each example of ``(batch, bands, frames)`` along time by its own shift in [-max_shift, max_shift]."""
    frames = x.shape[-1]
    shift = torch.randint(-max_shift, max_shift + 1, (len(x), 1), device=x.device)
    index = (torch.arange(frames, device=x.device) - shift) % frames  # (batch, frames)
    return torch.gather(x, -1, index[:, None, :].expand_as(x))
