"""Heads over a pretrained embedding: input (batch, dims, 1) float (a front end such as BirdNET's, standardised per
dimension), output (batch, n_classes) logits.

`EmbeddingLinear` is the linear probe (logistic regression when trained with cross-entropy), the usual first
measure of how well an embedding separates the species; `EmbeddingMLP` adds one hidden layer with dropout, as
BirdNET-Analyzer's custom classifiers do. Both see the embedding whole and once: no convolution, no pooling.
"""

from __future__ import annotations

import torch
from torch import nn

from speciesclf.choices import BIRDNET_EMBEDDING_SIZE

__all__ = ["EmbeddingLinear", "EmbeddingMLP"]


class _EmbeddingHead(nn.Module):
    def __init__(self, n_classes: int, layers: nn.Sequential) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.n_classes = n_classes
        self.head = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1:] != (BIRDNET_EMBEDDING_SIZE, 1):
            raise ValueError(f"expected embeddings of shape (batch, {BIRDNET_EMBEDDING_SIZE}, 1), got {tuple(x.shape)}")
        return self.head(x.flatten(1))


class EmbeddingLinear(_EmbeddingHead):
    """The linear probe: dropout on the input, then one linear layer to the species."""

    def __init__(self, n_classes: int, dropout: float = 0.2) -> None:
        super().__init__(n_classes, nn.Sequential(nn.Dropout(dropout), nn.Linear(BIRDNET_EMBEDDING_SIZE, n_classes)))


class EmbeddingMLP(_EmbeddingHead):
    """One hidden layer of 512 units with ReLU and dropout, then the species."""

    def __init__(self, n_classes: int, hidden: int = 512, dropout: float = 0.5) -> None:
        super().__init__(
            n_classes,
            nn.Sequential(
                nn.Dropout(dropout / 2),
                nn.Linear(BIRDNET_EMBEDDING_SIZE, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, n_classes),
            ),
        )
