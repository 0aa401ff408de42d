"""MFCC features of fixed-length clips: ``(n, clip_samples)`` → ``(n, n_mfcc, frames)``, the shapes
:class:`~speciesclf.features.config.FeatureConfig` gives."""

from __future__ import annotations

import numpy as np
import torch
import torchaudio

from speciesclf.features.config import FeatureConfig

__all__ = ["MFCCExtractor"]


class MFCCExtractor:
    """``torchaudio.transforms.MFCC`` with the frame count pinned to :attr:`FeatureConfig.frames`."""

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self.transform = torchaudio.transforms.MFCC(
            sample_rate=config.sample_rate,
            n_mfcc=config.n_mfcc,
            melkwargs={
                "n_fft": config.n_fft,
                "hop_length": config.hop_length,
                "n_mels": config.n_mels,
                "f_min": config.f_min,
                "f_max": config.f_max,
                "center": True,
            },
        )

    @torch.no_grad()
    def __call__(self, clips: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(n, clip_samples)`` float → float32 ``(n, n_mfcc, frames)``; a single clip drops the leading axis."""
        x = torch.as_tensor(clips, dtype=torch.float32)
        if x.shape[-1] != self.config.clip_samples:
            raise ValueError(f"expected clips of {self.config.clip_samples} samples, got {x.shape[-1]}")
        mfcc = self.transform(x)  # center=True gives frames + 1; drop the last half-window frame
        return mfcc[..., : self.config.frames].contiguous().numpy()
