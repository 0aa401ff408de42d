"""CNNs over feature "images": input (batch, bands, frames) float, bands being MFCCs or mel bands; output
(batch, n_classes) logits.

`AudioCNN` is the study's Phase 0/2A network (4 conv blocks, 32-64-128-256 channels, 256-unit hidden layer);
`AudioCNNv2` its Phase 2B network (5 blocks, 64-128-256-512-512, 512-unit hidden layer, ~4.2M parameters at
89 classes); `AudioCNNv3`, Phase 3's, puts v2's width where it is cheap (5 blocks, 32-64-128-256-512);
`AudioCNNv4` is v3 with PANNs' pooling over time (a call heard in a few frames counts as much as a long one). Pooling
uses ``ceil_mode`` so the 20-coefficient axis survives five halvings (20→10→5→3→2→1) and any input with at least
32 frames works; global pooling makes the head independent of the clip length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from speciesclf.models.heads import EmbeddingLinear, EmbeddingMLP

__all__ = ["MODELS", "AudioCNN", "AudioCNNv2", "AudioCNNv3", "AudioCNNv4", "build_model", "count_parameters"]


def _conv_block(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    """Conv → batch norm → ReLU → 2x2 max pool, with the pool computed before the ReLU.

    ``relu(maxpool(x)) == maxpool(relu(x))`` bit for bit (both are monotone), and so are their gradients (a
    window's gradient goes to its first maximum when that maximum is positive, else nowhere), but the ReLU then
    runs on a quarter of the values: about 10 % off a training step on CPU, where these element-wise passes over
    the first block's activations cost as much as the convolutions. Neither layer has parameters, so checkpoints
    are the same either way (``tests/test_models.py`` checks all of this).
    """
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),  # bias is redundant before batch norm
        nn.BatchNorm2d(c_out),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
    )


class _MaxPlusMeanOverTime(nn.Module):
    """``(batch, channels, bands, frames)`` → ``(batch, channels)``: the mean over bands, then the max plus the mean
    over frames (PANNs, Kong et al. 2020). The max keeps a call that fills a few frames of the window, which a plain
    average dilutes with the silence around it; the mean keeps the gradient flowing to every frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=2)
        return x.amax(dim=-1) + x.mean(dim=-1)


class _SpectroCNN(nn.Module):
    """Conv blocks → global pool (average, or :class:`_MaxPlusMeanOverTime`) → hidden layer → classifier."""

    min_frames = 32

    def __init__(
        self,
        n_classes: int,
        channels: Sequence[int],
        hidden: int,
        conv_dropout: float = 0.1,
        head_dropout: float = 0.3,
        pool: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.n_classes = n_classes
        blocks, c_in = [], 1
        for c_out in channels:
            blocks.append(_conv_block(c_in, c_out, conv_dropout))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.pool = pool if pool is not None else nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(head_dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"expected input of shape (batch, bands, frames), got {tuple(x.shape)}")
        if x.shape[-1] < self.min_frames:
            raise ValueError(f"need at least {self.min_frames} frames, got {x.shape[-1]}")
        x = x.unsqueeze(1)  # (B, 1, bands, frames): bands x time as a one-channel image
        return self.head(self.pool(self.features(x)))


class AudioCNN(_SpectroCNN):
    """The study's 4-block CNN (Phase 0 and 2A): channels 32-64-128-256, hidden layer 256."""

    def __init__(self, n_classes: int, conv_dropout: float = 0.1, head_dropout: float = 0.3) -> None:
        super().__init__(n_classes, (32, 64, 128, 256), 256, conv_dropout, head_dropout)


class AudioCNNv2(_SpectroCNN):
    """The study's larger CNN (Phase 2B): channels 64-128-256-512-512, hidden layer 512."""

    def __init__(self, n_classes: int, conv_dropout: float = 0.1, head_dropout: float = 0.3) -> None:
        super().__init__(n_classes, (64, 128, 256, 512, 512), 512, conv_dropout, head_dropout)


class AudioCNNv3(_SpectroCNN):
    """Phase 3's CNN: AudioCNN's four blocks plus a fifth of 512 channels, hidden layer 512 (~1.9M parameters).

    A convolution's cost scales with its input's area times its channels in times out; each block quarters the
    area, so v2's 64-channel first blocks cost most of its step while its capacity sits in the 512-channel top. v3
    keeps AudioCNN's narrow, costly bottom and v2's wide, cheap top: on 40 bands x 500 frames a training step
    costs about 1.25 times AudioCNN's and 0.4 times v2's (2-core CPU, fp32), and Phase 3's recipe with it scores
    above Phase 2B on the synthetic set (chosen on validation; reports/results.md).
    """

    def __init__(self, n_classes: int, conv_dropout: float = 0.1, head_dropout: float = 0.3) -> None:
        super().__init__(n_classes, (32, 64, 128, 256, 512), 512, conv_dropout, head_dropout)


class AudioCNNv4(_SpectroCNN):
    """AudioCNNv3's blocks and head with PANNs' pooling (:class:`_MaxPlusMeanOverTime`) in place of the global
    average: the same parameters and nearly the same cost, for species whose calls are short or sparse."""

    def __init__(self, n_classes: int, conv_dropout: float = 0.1, head_dropout: float = 0.3) -> None:
        channels = (32, 64, 128, 256, 512)
        super().__init__(n_classes, channels, 512, conv_dropout, head_dropout, pool=_MaxPlusMeanOverTime())


MODELS: dict[str, type[nn.Module]] = {
    "AudioCNN": AudioCNN,
    "AudioCNNv2": AudioCNNv2,
    "AudioCNNv3": AudioCNNv3,
    "AudioCNNv4": AudioCNNv4,
    "EmbeddingLinear": EmbeddingLinear,  # heads over a pretrained front end's embedding (speciesclf.models.heads)
    "EmbeddingMLP": EmbeddingMLP,
}


def build_model(name: str, n_classes: int, **kwargs: float) -> nn.Module:
    """Instantiate a model by its name in :data:`MODELS` (so params can choose it)."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}") from None
    return cls(n_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
