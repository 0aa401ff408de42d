"""Tests for speciesclf.models: shapes, parameter budgets, the model registry and input checks."""

from __future__ import annotations

import copy

import pytest
import torch

from speciesclf.models.cnn import (
    MODELS,
    AudioCNN,
    AudioCNNv2,
    AudioCNNv3,
    AudioCNNv4,
    build_model,
    count_parameters,
)

SPECTRO_CNNS = [AudioCNN, AudioCNNv2, AudioCNNv3, AudioCNNv4]


@pytest.mark.parametrize("cls", SPECTRO_CNNS)
@pytest.mark.parametrize("frames", [32, 500, 501])
def test_output_shape(cls: type, frames: int) -> None:
    torch.manual_seed(0)
    model = cls(7).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 20, frames))
    assert out.shape == (3, 7)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_parameter_counts() -> None:
    v2 = count_parameters(AudioCNNv2(89))
    assert 4.2e6 * 0.9 <= v2 <= 4.2e6 * 1.1
    v1 = count_parameters(AudioCNN(89))
    assert 0.40e6 <= v1 <= 0.55e6
    # the head is the only part that depends on the number of classes
    assert count_parameters(AudioCNN(90)) - v1 == 256 + 1
    v3 = count_parameters(AudioCNNv3(89))
    assert 1.7e6 <= v3 <= 2.1e6 and v3 - v1 > 256 * 512 * 9  # AudioCNN's blocks and a fifth of 512 channels
    assert count_parameters(AudioCNNv4(89)) == v3  # only the pooling differs, and it has no parameters


def test_v4_pools_max_plus_mean_over_time() -> None:
    """AudioCNNv4's head sees, per channel, the max over frames plus the mean over frames of the band-averaged
    feature maps; computed here from v3's layers with the same weights (v3 averages over bands and frames)."""
    torch.manual_seed(0)
    v4 = AudioCNNv4(5).eval()
    v3 = AudioCNNv3(5).eval()
    v3.load_state_dict(v4.state_dict())
    x = torch.randn(3, 64, 250)
    x[0, :, 100:] = -3.0  # a call in the first 100 frames only: the max and the mean over time differ
    with torch.no_grad():
        maps = v3.features(x.unsqueeze(1))  # (3, 512, bands, frames)
        by_frame = maps.mean(dim=2)
        expected = v3.head(by_frame.max(dim=-1).values + by_frame.mean(dim=-1))
        assert torch.allclose(v4(x), expected, atol=1e-6)
        assert not torch.allclose(v3(x), v4(x), atol=1e-3)  # not the global average


def test_count_parameters_skips_frozen() -> None:
    model = AudioCNN(5)
    total = count_parameters(model)
    for p in model.head.parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == total - sum(p.numel() for p in model.head.parameters())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_build_model_by_name(name: str) -> None:
    model = build_model(name, 4)
    assert type(model) is MODELS[name]
    assert model.n_classes == 4


def test_build_model_unknown_name() -> None:
    with pytest.raises(ValueError, match="AudioCNNX") as exc:
        build_model("AudioCNNX", 4)
    for name in MODELS:
        assert name in str(exc.value)


def test_too_few_classes() -> None:
    with pytest.raises(ValueError, match="n_classes"):
        AudioCNN(1)


@pytest.mark.parametrize("cls", SPECTRO_CNNS)
def test_too_few_frames(cls: type) -> None:
    model = cls(3).eval()
    with pytest.raises(ValueError, match="32 frames"):
        model(torch.zeros(2, 20, 31))


@pytest.mark.parametrize("shape", [(20, 64), (2, 1, 20, 64), (64,)])
def test_wrong_ndim(shape: tuple[int, ...]) -> None:
    model = AudioCNN(3).eval()
    with pytest.raises(ValueError, match=r"\(batch, bands, frames\)"):
        model(torch.zeros(shape))


@pytest.mark.parametrize("cls", SPECTRO_CNNS)
def test_eval_mode_is_deterministic(cls: type) -> None:
    torch.manual_seed(0)
    model = cls(5).eval()
    x = torch.randn(4, 20, 64)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)
    # in eval mode a sample's logits do not depend on the rest of its batch (batch norm uses running stats)
    with torch.no_grad():
        single = model(x[:1])
    torch.testing.assert_close(single, a[:1], rtol=1e-4, atol=1e-5)


def test_train_mode_dropout_varies() -> None:
    torch.manual_seed(0)
    model = AudioCNN(5, head_dropout=0.5).train()
    x = torch.randn(4, 20, 64)
    assert not torch.equal(model(x), model(x))


def _relu_before_pool(model: torch.nn.Module) -> torch.nn.Module:
    """The textbook block order (conv, norm, ReLU, pool), same weights: the reference for the reordered blocks."""
    ref = copy.deepcopy(model)
    for block in ref.features:
        assert isinstance(block[2], torch.nn.MaxPool2d) and isinstance(block[3], torch.nn.ReLU)
        block[2], block[3] = block[3], block[2]
    return ref


@pytest.mark.parametrize("cls", SPECTRO_CNNS)
@pytest.mark.parametrize("bf16", [False, True])
def test_pool_before_relu_is_bit_identical(cls: type, bf16: bool) -> None:
    """Pooling before the ReLU changes no bit of the logits, the loss's gradients or the batch-norm statistics."""
    torch.manual_seed(0)
    model = cls(7).to(memory_format=torch.channels_last).train()
    ref = _relu_before_pool(model)
    assert list(model.state_dict()) == list(ref.state_dict())  # same checkpoint keys
    x = torch.randn(6, 20, 64)
    x[:, :, :24] = 0.0  # silent frames: windows of equal values, where a pool must pick the same first maximum
    y = torch.arange(6) % 7
    outs, grads = [], []
    for net in (model, ref):
        torch.manual_seed(1)  # the same dropout masks
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        outs.append(logits)
        grads.append([p.grad for p in net.parameters()])
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), k  # running statistics updated alike
