"""A network applied to windows: batched fp32 logits, float64 probabilities, the network left in eval mode."""

from __future__ import annotations

import numpy as np
import torch

from speciesclf.models.cnn import AudioCNN
from speciesclf.models.inference import probabilities, window_logits, window_proba


def test_window_probabilities_are_the_float64_softmax_of_the_batched_logits() -> None:
    torch.manual_seed(0)
    network = AudioCNN(5).train()  # left in training mode: scoring puts it in eval mode
    x = np.random.default_rng(0).standard_normal((10, 20, 32)).astype(np.float32)
    logits = window_logits(network, x, batch_size=4)  # batches of 4, 4 and 2
    assert not network.training and logits.shape == (10, 5) and logits.dtype == torch.float32
    with torch.no_grad():
        whole = network(torch.from_numpy(x))
    torch.testing.assert_close(logits, whole, rtol=1e-5, atol=1e-6)
    proba = window_proba(network, x, batch_size=4)
    assert proba.dtype == np.float64 and np.array_equal(proba, probabilities(logits))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.array_equal(proba, torch.softmax(logits.double(), dim=1).numpy())  # cast first, then the softmax
