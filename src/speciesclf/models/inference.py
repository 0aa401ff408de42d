"""A network applied to windows: logits a batch at a time, and species probabilities from them.

Every place that scores windows (training's thresholds, evaluation, selection's folds, the predictor) goes through
here, so all of them compute the same numbers the same way: fp32 logits concatenated on the CPU, then the softmax
over species in float64.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["probabilities", "window_logits", "window_proba"]


@torch.no_grad()
def window_logits(
    network: nn.Module, windows: np.ndarray, batch_size: int, device: torch.device | None = None
) -> torch.Tensor:
    """``(windows, species)`` logits on the CPU of standardised window features, ``batch_size`` windows per forward
    pass on ``device`` (default: the network's), the network left in eval mode."""
    network.eval()
    device = next(network.parameters()).device if device is None else device
    batches = range(0, len(windows), batch_size)
    return torch.cat([network(torch.as_tensor(windows[i : i + batch_size]).to(device)).cpu() for i in batches])


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """The softmax of ``(windows, species)`` logits in float64: probabilities that sum to one within float64
    precision (sklearn checks it)."""
    return torch.softmax(logits.double(), dim=1).numpy()


def window_proba(
    network: nn.Module, windows: np.ndarray, batch_size: int, device: torch.device | None = None
) -> np.ndarray:
    """``(windows, species)`` float64 probabilities of standardised window features (see :func:`window_logits`)."""
    return probabilities(window_logits(network, windows, batch_size, device))
