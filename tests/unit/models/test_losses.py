"""Tests for speciesclf.losses: focal loss vs cross-entropy, an independent reference, numerics, checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from speciesclf.models.losses import (
    BalancedSoftmaxLoss,
    ClassWeightedCrossEntropy,
    FocalLoss,
    LogitAdjustedLoss,
    adjust_logits,
    balanced_softmax_loss,
    effective_number_weights,
    focal_loss,
    inverse_frequency_weights,
    logit_adjusted_cross_entropy,
)

REDUCTIONS = ("mean", "sum", "none")
N, C = 13, 6


def _inputs(seed: int = 0, n: int = N, c: int = C, scale: float = 2.0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(n, c, generator=gen, dtype=torch.float64)).requires_grad_(True)
    target = torch.randint(0, c, (n,), generator=gen)
    return logits, target


def _alpha(seed: int = 1, c: int = C) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.2 + torch.rand(c, generator=gen, dtype=torch.float64)


def _value_and_grad(fn, logits: Tensor) -> tuple[Tensor, Tensor]:
    x = logits.detach().clone().requires_grad_(True)
    out = fn(x)
    # A fixed random cotangent checks the full vector-Jacobian product for reduction="none" too.
    cot = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    (grad,) = torch.autograd.grad((out * cot).sum(), x)
    return out.detach(), grad


def _assert_same(fn_a, fn_b, logits: Tensor, tol: float = 1e-6) -> None:
    va, ga = _value_and_grad(fn_a, logits)
    vb, gb = _value_and_grad(fn_b, logits)
    assert va.shape == vb.shape
    torch.testing.assert_close(va, vb, rtol=tol, atol=tol)
    torch.testing.assert_close(ga, gb, rtol=tol, atol=tol)


def _reference(
    logits: Tensor, target: Tensor, gamma: float, alpha: Tensor | None, reduction: str, eps: float
) -> Tensor:
    """Focal loss written independently: softmax probabilities and plain log, no log_softmax."""
    c = logits.shape[1]
    p = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, c).to(logits.dtype)
    w = torch.ones(c, dtype=logits.dtype) if alpha is None else alpha
    smoothed = (1 - eps) * onehot + eps / c
    per_sample = -(smoothed * w * torch.log(p)).sum(dim=1)
    p_y = (p * onehot).sum(dim=1)
    per_sample = (1 - p_y) ** gamma * per_sample
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.sum() / (onehot * w).sum()


# --- γ = 0 is cross-entropy -------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
def test_gamma0_matches_cross_entropy(reduction: str, label_smoothing: float) -> None:
    logits, target = _inputs()
    _assert_same(
        lambda x: focal_loss(x, target, gamma=0.0, reduction=reduction, label_smoothing=label_smoothing),
        lambda x: F.cross_entropy(x, target, reduction=reduction, label_smoothing=label_smoothing),
        logits,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
def test_gamma0_per_class_alpha_matches_weighted_cross_entropy(reduction: str, label_smoothing: float) -> None:
    logits, target = _inputs(seed=2)
    alpha = _alpha()
    _assert_same(
        lambda x: focal_loss(x, target, gamma=0.0, alpha=alpha, reduction=reduction, label_smoothing=label_smoothing),
        lambda x: F.cross_entropy(x, target, weight=alpha, reduction=reduction, label_smoothing=label_smoothing),
        logits,
    )


def test_per_class_alpha_accepts_list_like_weight() -> None:
    logits, target = _inputs(seed=3)
    alpha = _alpha()
    from_list = focal_loss(logits.float(), target, gamma=0.0, alpha=alpha.tolist())
    expected = F.cross_entropy(logits.float(), target, weight=alpha.float())
    torch.testing.assert_close(from_list, expected)


# --- γ > 0 vs an independent formula ----------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("use_alpha", "label_smoothing"), [(False, 0.0), (True, 0.0), (True, 0.2)])
def test_matches_reference_formula(gamma: float, reduction: str, use_alpha: bool, label_smoothing: float) -> None:
    logits, target = _inputs(seed=int(10 * gamma))
    alpha = _alpha() if use_alpha else None
    _assert_same(
        lambda x: focal_loss(x, target, gamma=gamma, alpha=alpha, reduction=reduction, label_smoothing=label_smoothing),
        lambda x: _reference(x, target, gamma, alpha, reduction, label_smoothing),
        logits,
        tol=1e-10,
    )


def test_focal_downweights_confident_samples() -> None:
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, target, reduction="none")
    fl = focal_loss(logits, target, gamma=2.0, reduction="none")
    ratio = fl / ce
    assert torch.all(fl < ce)
    assert ratio[0] < ratio[1]  # the confident sample is suppressed more


# --- float α ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha", [0.25, 3, torch.tensor(0.5, dtype=torch.float64)])
def test_float_alpha_scales_loss(reduction: str, alpha: float | Tensor) -> None:
    logits, target = _inputs(seed=4)
    scale = float(alpha)
    _assert_same(
        lambda x: focal_loss(x, target, gamma=2.0, alpha=alpha, reduction=reduction, label_smoothing=0.1),
        lambda x: scale * focal_loss(x, target, gamma=2.0, reduction=reduction, label_smoothing=0.1),
        logits,
        tol=1e-12,
    )


def test_constant_per_class_alpha_mean_is_unscaled() -> None:
    # Documented contrast with float α: the weighted mean divides the constant back out.
    logits, target = _inputs(seed=5)
    per_class = focal_loss(logits, target, alpha=[3.0] * C)
    plain = focal_loss(logits, target)
    torch.testing.assert_close(per_class, plain)


# --- class-balanced weights -------------------------------------------------------------------------


def test_effective_number_weights_closed_form() -> None:
    counts = [100, 10, 1]
    beta = 0.9
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    expected = torch.tensor([3 * r / sum(raw) for r in raw], dtype=torch.float32)
    weights = effective_number_weights(counts, beta)
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(weights.sum(), torch.tensor(3.0))


def test_balanced_weights_sum_to_c_and_favour_rare_classes() -> None:
    counts = torch.tensor([5000, 1200, 300, 40, 7, 1])
    loss = FocalLoss.balanced(counts, beta=0.999, gamma=1.5)
    assert loss.alpha is not None
    assert loss.alpha.shape == (6,)
    torch.testing.assert_close(loss.alpha.sum(), torch.tensor(6.0))
    assert torch.all(loss.alpha[1:] > loss.alpha[:-1])  # strictly larger for rarer classes
    assert loss.gamma == 1.5


def test_balanced_beta_near_one_is_stable() -> None:
    weights = effective_number_weights([10**6, 1], beta=0.999999)
    assert torch.isfinite(weights).all()
    assert weights[1] > weights[0]


def test_beta_zero_gives_ones() -> None:
    torch.testing.assert_close(effective_number_weights([10, 1, 500], beta=0.0), torch.ones(3))


def test_zero_count_raises_with_class_index() -> None:
    with pytest.raises(ValueError, match=r"counts.*class 2"):
        effective_number_weights([10, 3, 0, 4], beta=0.99)
    with pytest.raises(ValueError, match="counts"):
        FocalLoss.balanced([1, 0])


@pytest.mark.parametrize("beta", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_beta_raises(beta: float) -> None:
    with pytest.raises(ValueError, match="beta"):
        effective_number_weights([1, 2], beta=beta)


def test_counts_must_be_1d() -> None:
    with pytest.raises(ValueError, match="counts"):
        effective_number_weights([[1, 2], [3, 4]], beta=0.9)


# --- numerics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 2.0])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_finite_for_huge_logits(dtype: torch.dtype, gamma: float, label_smoothing: float) -> None:
    big = 1e4
    logits = torch.tensor(
        [
            [big, -big, 0.0],  # correct class, confident
            [big, -big, 0.0],  # wrong class, confident
            [-big, big, -big],  # wrong class, confident
            [0.0, 0.0, big],  # correct class, confident
        ],
        dtype=dtype,
        requires_grad=True,
    )
    target = torch.tensor([0, 1, 0, 2])
    for reduction in REDUCTIONS:
        out = focal_loss(
            logits, target, gamma=gamma, alpha=[1.0, 2.0, 0.5], reduction=reduction, label_smoothing=label_smoothing
        )
        (grad,) = torch.autograd.grad(out.sum(), logits)
        assert torch.isfinite(out).all()
        assert torch.isfinite(grad).all()
    per_sample = focal_loss(logits, target, gamma=gamma, reduction="none")
    assert per_sample[0].item() == pytest.approx(0.0, abs=1e-6)
    assert per_sample[1].item() == pytest.approx(2 * big, rel=1e-6)  # (1 - p_y)^γ = 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.25, 0.5])
def test_finite_gradients_when_p_tends_to_one(dtype: torch.dtype, gamma: float) -> None:
    # Margins that make 1 - p_y small but nonzero, tiny, subnormal-range and exactly 0 in each dtype.
    margins = torch.tensor([5.0, 20.0, 40.0, 80.0, 100.0, 300.0, 800.0, 1e4], dtype=dtype)
    logits = torch.zeros(len(margins), 4, dtype=dtype)
    logits[:, 1] = margins
    logits.requires_grad_(True)
    target = torch.ones(len(margins), dtype=torch.int64)
    for label_smoothing in (0.0, 0.1):
        out = focal_loss(logits, target, gamma=gamma, reduction="none", label_smoothing=label_smoothing)
        (grad,) = torch.autograd.grad(out.sum(), logits)
        assert torch.isfinite(out).all()
        assert torch.isfinite(grad).all()
    # Where log_softmax still resolves 1 - p_y (margin 5 in float32, 5 and 20 in float64) the value matches
    # the closed form (1 - p)^γ · (-log p) to log_softmax's own precision; expm1 adds no cancellation.
    k = 1 if dtype == torch.float32 else 2
    out = focal_loss(logits.detach()[:k], target[:k], gamma=gamma, reduction="none").double()
    one_minus_p = 3 * torch.exp(-margins[:k].double()) / (1 + 3 * torch.exp(-margins[:k].double()))
    expected = one_minus_p**gamma * -torch.log1p(-one_minus_p)
    torch.testing.assert_close(out, expected, rtol=1e-4 if dtype == torch.float32 else 1e-6, atol=0)


def test_bfloat16_and_half_logits_return_float32() -> None:
    logits, target = _inputs(seed=6)
    logits32 = logits.detach().float()
    ref = focal_loss(logits32, target, gamma=2.0, alpha=_alpha().float())
    for low in (torch.bfloat16, torch.float16):
        x = logits32.to(low).requires_grad_(True)
        out = focal_loss(x, target, gamma=2.0, alpha=_alpha().float())
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
        # The upcast is the first op, so it equals the float32 loss of the rounded logits exactly.
        torch.testing.assert_close(out, focal_loss(x.detach().float(), target, gamma=2.0, alpha=_alpha().float()))
        out.backward()
        assert x.grad is not None and x.grad.dtype == low and torch.isfinite(x.grad.float()).all()


def test_float64_logits_stay_float64() -> None:
    logits, target = _inputs()
    assert focal_loss(logits, target).dtype == torch.float64


# --- module -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha", [None, 0.5, "per_class"])
def test_module_equals_functional(reduction: str, alpha: str | float | None) -> None:
    logits, target = _inputs(seed=7)
    logits = logits.detach().float()
    a = _alpha().float() if alpha == "per_class" else alpha
    module = FocalLoss(gamma=1.5, alpha=a, reduction=reduction, label_smoothing=0.05)
    expected = focal_loss(logits, target, gamma=1.5, alpha=a, reduction=reduction, label_smoothing=0.05)
    out = module(logits, target)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    if reduction == "none":
        assert out.shape == (N,)
    else:
        assert out.shape == ()


def test_alpha_buffer_is_non_persistent_and_follows_to() -> None:
    weights = [1.0, 2.0, 3.0]
    module = FocalLoss(gamma=0.0, alpha=weights, reduction="none")
    assert module.alpha is not None and module.alpha.dtype == torch.float32
    assert "alpha" in dict(module.named_buffers())
    assert "alpha" not in module.state_dict()
    module.load_state_dict({})  # a checkpoint without alpha loads cleanly
    module = module.to(torch.float64)
    assert module.alpha is not None and module.alpha.dtype == torch.float64
    logits, target = _inputs(c=3)
    out = module(logits, target)
    assert out.dtype == torch.float64
    expected = F.cross_entropy(logits, target, weight=torch.tensor(weights, dtype=torch.float64), reduction="none")
    torch.testing.assert_close(out, expected)


def test_module_does_not_alias_caller_alpha() -> None:
    alpha = torch.ones(3)
    module = FocalLoss(alpha=alpha)
    alpha.mul_(5)
    assert module.alpha is not None
    torch.testing.assert_close(module.alpha, torch.ones(3))


def test_extra_repr() -> None:
    text = repr(FocalLoss(gamma=2.0, alpha=[0.5, 1.5], reduction="sum"))
    assert "gamma=2" in text and "alpha=[0.5, 1.5]" in text and "reduction='sum'" in text
    assert "alpha=None" in repr(FocalLoss())
    assert "alpha=0.25" in repr(FocalLoss(alpha=0.25))


# --- argument checks --------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [-0.5, float("inf"), float("nan")])
def test_bad_gamma(gamma: float) -> None:
    logits, target = _inputs()
    with pytest.raises(ValueError, match="gamma"):
        focal_loss(logits, target, gamma=gamma)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=gamma)


def test_bad_reduction() -> None:
    logits, target = _inputs()
    with pytest.raises(ValueError, match="reduction"):
        focal_loss(logits, target, reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction"):
        FocalLoss(reduction="batchmean")  # type: ignore[arg-type]


@pytest.mark.parametrize("label_smoothing", [-0.1, 1.5, float("nan")])
def test_bad_label_smoothing(label_smoothing: float) -> None:
    logits, target = _inputs()
    with pytest.raises(ValueError, match="label_smoothing"):
        focal_loss(logits, target, label_smoothing=label_smoothing)
    with pytest.raises(ValueError, match="label_smoothing"):
        FocalLoss(label_smoothing=label_smoothing)


@pytest.mark.parametrize(
    "alpha",
    [[1.0] * (C - 1), [1.0] * (C + 1), [1.0, -1.0, 1.0, 1.0, 1.0, 1.0], -0.25, [[1.0] * C], [], math.inf],
)
def test_bad_alpha(alpha: object) -> None:
    logits, target = _inputs()
    with pytest.raises(ValueError, match="alpha"):
        focal_loss(logits, target, alpha=alpha)  # type: ignore[arg-type]


def test_alpha_length_checked_in_forward() -> None:
    module = FocalLoss(alpha=[1.0, 2.0])  # C is unknown until forward
    logits, target = _inputs(c=3)
    with pytest.raises(ValueError, match="alpha"):
        module(logits, target)


@pytest.mark.parametrize(
    ("logits", "target", "name"),
    [
        (torch.randn(4), torch.zeros(4, dtype=torch.int64), "logits"),
        (torch.randn(2, 4, 3), torch.zeros(2, dtype=torch.int64), "logits"),
        (torch.randint(0, 3, (4, 3)), torch.zeros(4, dtype=torch.int64), "logits"),
        (torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.int64), "target"),
        (torch.randn(4, 3), torch.zeros(5, dtype=torch.int64), "target"),
        (torch.randn(4, 3), torch.zeros(4), "target"),
        (torch.randn(4, 3), torch.tensor([0, 1, 3, 0]), "target"),
        (torch.randn(4, 3), torch.tensor([0, -1, 2, 0]), "target"),
    ],
)
def test_bad_inputs(logits: Tensor, target: Tensor, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        focal_loss(logits, target)
    with pytest.raises(ValueError, match=name):
        FocalLoss()(logits, target)


# --- logit adjustment, balanced softmax, inverse-frequency weights ----------------------------------

COUNTS = [5000, 1200, 300, 40, 7, 1]  # C = 6, long-tailed


def _np_cross_entropy(
    z: np.ndarray, y: np.ndarray, weight: np.ndarray | None, reduction: str, eps: float
) -> np.ndarray | float:
    """Cross-entropy by hand: numpy log-softmax and an explicit loop over samples."""
    c = z.shape[1]
    w = np.ones(c) if weight is None else weight
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    per_sample, denom = [], 0.0
    for i in range(z.shape[0]):
        yi = int(y[i])
        per_sample.append(-(1 - eps) * w[yi] * log_p[i, yi] - eps / c * sum(w[k] * log_p[i, k] for k in range(c)))
        denom += w[yi]
    out = np.array(per_sample)
    if reduction == "none":
        return out
    return float(out.sum()) if reduction == "sum" else float(out.sum() / denom)


def _np_log_prior(counts: list[int] | list[float]) -> np.ndarray:
    n = np.asarray(counts, dtype=np.float64)
    return np.log(n / n.sum())


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_logit_adjusted_matches_numpy_reference(tau: float, reduction: str, label_smoothing: float) -> None:
    logits, target = _inputs(seed=20)
    out = logit_adjusted_cross_entropy(
        logits, target, COUNTS, tau=tau, reduction=reduction, label_smoothing=label_smoothing
    )
    z = logits.detach().numpy() + tau * _np_log_prior(COUNTS)
    expected = _np_cross_entropy(z, target.numpy(), None, reduction, label_smoothing)
    assert out.shape == ((N,) if reduction == "none" else ())
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tau", [0.5, 1.0])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_logit_adjusted_gradient_is_adjusted_softmax_minus_target(tau: float, label_smoothing: float) -> None:
    # d/dz CE(z + τ log π, y) = softmax(z + τ log π) - ((1 - ε) onehot(y) + ε / C), per sample.
    logits, target = _inputs(seed=21)
    out = logit_adjusted_cross_entropy(
        logits, target, COUNTS, tau=tau, reduction="sum", label_smoothing=label_smoothing
    )
    (grad,) = torch.autograd.grad(out, logits)
    z = logits.detach().numpy() + tau * _np_log_prior(COUNTS)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    q = (1 - label_smoothing) * np.eye(C)[target.numpy()] + label_smoothing / C
    np.testing.assert_allclose(grad.numpy(), p - q, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_tau0_is_cross_entropy(reduction: str, label_smoothing: float) -> None:
    logits, target = _inputs(seed=22)
    _assert_same(
        lambda x: logit_adjusted_cross_entropy(
            x, target, COUNTS, tau=0.0, reduction=reduction, label_smoothing=label_smoothing
        ),
        lambda x: F.cross_entropy(x, target, reduction=reduction, label_smoothing=label_smoothing),
        logits,
        tol=0.0,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_balanced_softmax_equals_logit_adjusted_tau1(reduction: str, label_smoothing: float) -> None:
    logits, target = _inputs(seed=23)
    kwargs = {"reduction": reduction, "label_smoothing": label_smoothing}
    _assert_same(
        lambda x: balanced_softmax_loss(x, target, COUNTS, **kwargs),
        lambda x: logit_adjusted_cross_entropy(x, target, COUNTS, tau=1.0, **kwargs),
        logits,
        tol=1e-12,
    )
    # ... and it is CE(z + log n) written out, with log counts rather than log priors.
    z = logits.detach().numpy() + np.log(np.asarray(COUNTS, dtype=np.float64))
    expected = _np_cross_entropy(z, target.numpy(), None, reduction, label_smoothing)
    np.testing.assert_allclose(balanced_softmax_loss(logits, target, COUNTS, **kwargs).detach().numpy(), expected)


def test_logit_adjustment_depends_only_on_count_ratios() -> None:
    logits, target = _inputs(seed=24)
    scaled = [17 * n for n in COUNTS]
    _assert_same(
        lambda x: logit_adjusted_cross_entropy(x, target, COUNTS, tau=1.5, reduction="none"),
        lambda x: logit_adjusted_cross_entropy(x, target, scaled, tau=1.5, reduction="none"),
        logits,
        tol=1e-12,
    )


def test_logit_adjustment_penalises_rare_labels_at_equal_logits() -> None:
    # With equal logits the adjusted loss is -log π_y: a rare class must win by a margin to be "correct".
    logits = torch.zeros(2, C, dtype=torch.float64)
    target = torch.tensor([0, C - 1])
    out = logit_adjusted_cross_entropy(logits, target, COUNTS, reduction="none")
    torch.testing.assert_close(out, -torch.tensor(_np_log_prior(COUNTS)[[0, C - 1]]))
    assert out[1] > out[0]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("tau", [0.0, 1.0, 2.5])
def test_logit_adjusted_module_equals_functional(reduction: str, tau: float) -> None:
    logits, target = _inputs(seed=25)
    logits = logits.detach().float()
    module = LogitAdjustedLoss(COUNTS, tau=tau, reduction=reduction, label_smoothing=0.05)
    expected = logit_adjusted_cross_entropy(logits, target, COUNTS, tau=tau, reduction=reduction, label_smoothing=0.05)
    out = module(logits, target)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert out.shape == ((N,) if reduction == "none" else ())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_balanced_softmax_module(reduction: str) -> None:
    logits, target = _inputs(seed=26)
    logits = logits.detach().float()
    module = BalancedSoftmaxLoss(COUNTS, reduction=reduction, label_smoothing=0.1)
    assert isinstance(module, LogitAdjustedLoss) and module.tau == 1.0
    out = module(logits, target)
    torch.testing.assert_close(out, LogitAdjustedLoss(COUNTS, reduction=reduction, label_smoothing=0.1)(logits, target))
    torch.testing.assert_close(
        out, balanced_softmax_loss(logits, target, COUNTS, reduction=reduction, label_smoothing=0.1)
    )
    assert out.shape == ((N,) if reduction == "none" else ())


def test_log_prior_buffer_is_non_persistent_and_follows_to() -> None:
    module = LogitAdjustedLoss(torch.tensor(COUNTS), tau=1.0, reduction="none")
    assert module.log_prior.dtype == torch.float32 and module.log_prior.shape == (C,)
    torch.testing.assert_close(module.log_prior, torch.tensor(_np_log_prior(COUNTS), dtype=torch.float32))
    assert "log_prior" in dict(module.named_buffers())
    assert "log_prior" not in module.state_dict()
    module.load_state_dict({})  # a checkpoint without the priors loads cleanly
    module = module.to(torch.float64)
    assert module.log_prior.dtype == torch.float64
    logits, target = _inputs(seed=27)
    out = module(logits, target)
    assert out.dtype == torch.float64
    # The buffer holds float32-rounded priors, hence the float32-level tolerance.
    expected = logit_adjusted_cross_entropy(logits, target, COUNTS, reduction="none")
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert module.to("meta").log_prior.device.type == "meta"  # buffers follow .to(device)


def test_class_weight_buffer_is_non_persistent_and_follows_to() -> None:
    module = ClassWeightedCrossEntropy(COUNTS, reduction="none")
    assert module.weight.dtype == torch.float32
    assert "weight" in dict(module.named_buffers()) and "weight" not in module.state_dict()
    module = module.to(torch.float64)
    assert module.weight.dtype == torch.float64
    logits, target = _inputs(seed=28)
    out = module(logits, target)
    assert out.dtype == torch.float64
    expected = F.cross_entropy(logits, target, weight=inverse_frequency_weights(COUNTS).double(), reduction="none")
    torch.testing.assert_close(out, expected)
    assert module.to("meta").weight.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_buffers_and_counts_on_cuda() -> None:
    logits, target = _inputs(seed=29)
    logits, target = logits.detach().float().cuda(), target.cuda()
    counts = torch.tensor(COUNTS, device="cuda")  # counts may live on the GPU too
    for module in (LogitAdjustedLoss(counts), BalancedSoftmaxLoss(counts), ClassWeightedCrossEntropy(counts)):
        module = module.cuda()
        assert all(b.is_cuda for b in module.buffers())
        out = module(logits, target)
        assert out.is_cuda
        torch.testing.assert_close(out.cpu(), module.cpu()(logits.cpu(), target.cpu()))
    for fn in (logit_adjusted_cross_entropy, balanced_softmax_loss):
        assert fn(logits, target, counts).is_cuda
    assert adjust_logits(logits, counts).is_cuda


def test_half_and_bfloat16_logits_return_float32() -> None:
    logits, target = _inputs(seed=30)
    for low in (torch.bfloat16, torch.float16):
        x = logits.detach().to(low)
        ref = x.float()
        for fn in (
            lambda z: logit_adjusted_cross_entropy(z, target, COUNTS),
            lambda z: balanced_softmax_loss(z, target, COUNTS),
            lambda z: ClassWeightedCrossEntropy(COUNTS)(z, target),
            lambda z: adjust_logits(z, COUNTS),
        ):
            out = fn(x)
            assert out.dtype == torch.float32
            torch.testing.assert_close(out, fn(ref), rtol=0, atol=0)  # the upcast is the first op


def test_float64_stays_float64() -> None:
    logits, target = _inputs()
    assert logit_adjusted_cross_entropy(logits, target, COUNTS).dtype == torch.float64
    assert balanced_softmax_loss(logits, target, COUNTS).dtype == torch.float64
    assert adjust_logits(logits, COUNTS).dtype == torch.float64


# --- inverse-frequency weights and class-weighted cross-entropy --------------------------------------


def test_inverse_frequency_weights_closed_form() -> None:
    counts = [100, 10, 1]
    weights = inverse_frequency_weights(counts)
    assert weights.dtype == torch.float32 and weights.shape == (3,)
    raw = [1 / 100, 1 / 10, 1.0]
    torch.testing.assert_close(weights, torch.tensor([3 * r / sum(raw) for r in raw]))
    sqrt = inverse_frequency_weights(counts, power=0.5)
    raw = [n**-0.5 for n in counts]
    torch.testing.assert_close(sqrt, torch.tensor([3 * r / sum(raw) for r in raw]))


def test_inverse_frequency_weights_sum_to_c_and_favour_rare_classes() -> None:
    for power in (0.25, 0.5, 1.0, 2.0):
        weights = inverse_frequency_weights(torch.tensor(COUNTS), power=power)
        torch.testing.assert_close(weights.sum(), torch.tensor(float(C)))
        assert torch.all(weights[1:] > weights[:-1])


def test_inverse_frequency_power0_gives_ones() -> None:
    torch.testing.assert_close(inverse_frequency_weights(COUNTS, power=0.0), torch.ones(C))


def test_inverse_frequency_is_effective_number_limit() -> None:
    # (1 - β) / (1 - β^n) -> 1 / n as β -> 1.
    counts = [200, 30, 5, 1]
    torch.testing.assert_close(
        effective_number_weights(counts, beta=1 - 1e-9), inverse_frequency_weights(counts), rtol=1e-6, atol=1e-6
    )


def test_inverse_frequency_extreme_counts_are_finite() -> None:
    weights = inverse_frequency_weights([1e12, 1e-3], power=3.0)
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights, torch.tensor([0.0, 2.0]))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("power", [0.5, 1.0])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_class_weighted_cross_entropy_matches_numpy_reference(
    reduction: str, power: float, label_smoothing: float
) -> None:
    logits, target = _inputs(seed=31)
    module = ClassWeightedCrossEntropy(COUNTS, power=power, reduction=reduction, label_smoothing=label_smoothing)
    out = module(logits, target)
    n = np.asarray(COUNTS, dtype=np.float64)
    w = n**-power * C / (n**-power).sum()
    expected = _np_cross_entropy(logits.detach().numpy(), target.numpy(), w, reduction, label_smoothing)
    assert out.shape == ((N,) if reduction == "none" else ())
    # The module's weights are float32; the reference's are exact.
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_weighted_equals_torch_cross_entropy_loss(reduction: str) -> None:
    logits, target = _inputs(seed=32)
    logits = logits.detach().float()
    module = ClassWeightedCrossEntropy(COUNTS, power=1.0, reduction=reduction, label_smoothing=0.05)
    expected = torch.nn.CrossEntropyLoss(
        weight=inverse_frequency_weights(COUNTS), reduction=reduction, label_smoothing=0.05
    )(logits, target)
    torch.testing.assert_close(module(logits, target), expected, rtol=0, atol=0)


def test_new_extra_repr() -> None:
    text = repr(LogitAdjustedLoss([3, 1], tau=0.5, reduction="sum", label_smoothing=0.1))
    assert "num_classes=2" in text and "tau=0.5" in text and "reduction='sum'" in text and "label_smoothing=0.1" in text
    assert "tau=1" in repr(BalancedSoftmaxLoss([3, 1]))
    text = repr(ClassWeightedCrossEntropy([3, 1]))
    assert "power=1" in text and "weight=[0.5, 1.5]" in text


# --- post-hoc logit adjustment ----------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.0, 1.0, 1.7])
def test_adjust_logits_formula(tau: float) -> None:
    logits, _ = _inputs(seed=33)
    out = adjust_logits(logits, COUNTS, tau=tau)
    expected = logits.detach().numpy() - tau * _np_log_prior(COUNTS)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(out.sum(), logits)
    torch.testing.assert_close(grad, torch.ones_like(grad))


def test_adjust_logits_any_leading_shape() -> None:
    logits = torch.randn(2, 5, C, dtype=torch.float64)
    out = adjust_logits(logits, COUNTS)
    assert out.shape == (2, 5, C)
    torch.testing.assert_close(out.reshape(-1, C), adjust_logits(logits.reshape(-1, C), COUNTS))
    torch.testing.assert_close(adjust_logits(logits[0, 0], COUNTS), out[0, 0])  # a single (C,) vector


def test_adjust_logits_raises_predicted_share_of_rare_classes() -> None:
    # A model fitted to imbalanced data scores balanced evidence s plus the log prior. Labels are balanced
    # at test time; raw argmax over-predicts head classes, adjusted argmax recovers argmax s.
    counts = [900, 90, 10]
    gen = torch.Generator().manual_seed(34)
    n_per_class = 400
    labels = torch.arange(3).repeat_interleave(n_per_class)
    evidence = torch.randn(3 * n_per_class, 3, generator=gen, dtype=torch.float64)
    evidence[torch.arange(len(labels)), labels] += 1.5
    logits = evidence + torch.tensor(_np_log_prior(counts))
    raw = logits.argmax(dim=1)
    adjusted = adjust_logits(logits, counts).argmax(dim=1)
    assert torch.equal(adjusted, evidence.argmax(dim=1))
    raw_share = torch.bincount(raw, minlength=3) / len(raw)
    adjusted_share = torch.bincount(adjusted, minlength=3) / len(adjusted)
    assert adjusted_share[2] > raw_share[2] + 0.2 and adjusted_share[1] > raw_share[1]
    assert adjusted_share[0] < raw_share[0]

    def balanced_accuracy(pred: Tensor) -> float:
        return float(np.mean([(pred[labels == c] == c).double().mean().item() for c in range(3)]))

    assert balanced_accuracy(adjusted) > balanced_accuracy(raw)


# --- argument checks for the long-tail losses -------------------------------------------------------


def _all_count_consumers(counts: object) -> list:
    logits, target = _inputs()
    return [
        lambda: logit_adjusted_cross_entropy(logits, target, counts),  # type: ignore[arg-type]
        lambda: balanced_softmax_loss(logits, target, counts),  # type: ignore[arg-type]
        lambda: adjust_logits(logits, counts),  # type: ignore[arg-type]
        lambda: inverse_frequency_weights(counts),  # type: ignore[arg-type]
        lambda: LogitAdjustedLoss(counts),  # type: ignore[arg-type]
        lambda: BalancedSoftmaxLoss(counts),  # type: ignore[arg-type]
        lambda: ClassWeightedCrossEntropy(counts),  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize(
    ("counts", "index"),
    [([10, 3, 0, 4, 1, 1], 2), ([10, -3, 1, 4, 1, 1], 1), ([10, 3, 1, 4, 1, math.nan], 5), ([math.inf] + [1] * 5, 0)],
)
def test_bad_class_count_names_class_index(counts: list[float], index: int) -> None:
    for call in _all_count_consumers(counts):
        with pytest.raises(ValueError, match=rf"class_counts.*class {index} "):
            call()


def test_zero_count_message_explains_log_prior() -> None:
    with pytest.raises(ValueError, match=r"no training samples.*-inf"):
        LogitAdjustedLoss([5, 0, 2])


@pytest.mark.parametrize("counts", [[], [[1, 2], [3, 4]], 7, "abc", None, [True, False]])
def test_class_counts_must_be_1d_numbers(counts: object) -> None:
    for call in _all_count_consumers(counts):
        with pytest.raises(ValueError, match="class_counts"):
            call()


@pytest.mark.parametrize("k", [C - 1, C + 1])
def test_class_counts_length_must_match_logits(k: int) -> None:
    logits, target = _inputs()
    counts = list(range(1, k + 1))
    message = rf"class_counts has {k} entries but logits have C={C}"
    calls = [
        lambda: logit_adjusted_cross_entropy(logits, target, counts),
        lambda: balanced_softmax_loss(logits, target, counts),
        lambda: adjust_logits(logits, counts),
        lambda: LogitAdjustedLoss(counts)(logits, target),  # C is unknown until forward
        lambda: BalancedSoftmaxLoss(counts)(logits, target),
        lambda: ClassWeightedCrossEntropy(counts)(logits, target),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("tau", [-0.5, float("inf"), float("nan"), "x", None])
def test_bad_tau(tau: object) -> None:
    logits, target = _inputs()
    with pytest.raises(ValueError, match="tau"):
        logit_adjusted_cross_entropy(logits, target, COUNTS, tau=tau)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tau"):
        LogitAdjustedLoss(COUNTS, tau=tau)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tau"):
        adjust_logits(logits, COUNTS, tau=tau)  # type: ignore[arg-type]


@pytest.mark.parametrize("power", [-1.0, float("inf"), float("nan"), "x"])
def test_bad_power(power: object) -> None:
    with pytest.raises(ValueError, match="power"):
        inverse_frequency_weights(COUNTS, power=power)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="power"):
        ClassWeightedCrossEntropy(COUNTS, power=power)  # type: ignore[arg-type]


def test_bad_reduction_and_label_smoothing_long_tail() -> None:
    logits, target = _inputs()
    for make in (
        lambda **kw: logit_adjusted_cross_entropy(logits, target, COUNTS, **kw),
        lambda **kw: balanced_softmax_loss(logits, target, COUNTS, **kw),
        lambda **kw: LogitAdjustedLoss(COUNTS, **kw),
        lambda **kw: BalancedSoftmaxLoss(COUNTS, **kw),
        lambda **kw: ClassWeightedCrossEntropy(COUNTS, **kw),
    ):
        with pytest.raises(ValueError, match="reduction"):
            make(reduction="avg")
        with pytest.raises(ValueError, match="label_smoothing"):
            make(label_smoothing=1.5)


@pytest.mark.parametrize(
    ("logits", "target", "name"),
    [
        (torch.randn(4), torch.zeros(4, dtype=torch.int64), "logits"),
        (torch.randint(0, 3, (4, 3)), torch.zeros(4, dtype=torch.int64), "logits"),
        (torch.randn(4, 3), torch.zeros(5, dtype=torch.int64), "target"),
        (torch.randn(4, 3), torch.tensor([0, 1, 3, 0]), "target"),
    ],
)
def test_bad_inputs_long_tail(logits: Tensor, target: Tensor, name: str) -> None:
    counts = [5, 2, 1]
    for loss in (
        lambda: logit_adjusted_cross_entropy(logits, target, counts),
        lambda: balanced_softmax_loss(logits, target, counts),
        lambda: LogitAdjustedLoss(counts)(logits, target),
        lambda: ClassWeightedCrossEntropy(counts)(logits, target),
    ):
        with pytest.raises(ValueError, match=name):
            loss()


def test_adjust_logits_bad_logits() -> None:
    with pytest.raises(ValueError, match="logits"):
        adjust_logits(torch.tensor(1.0), [1])
    with pytest.raises(ValueError, match="logits"):
        adjust_logits(torch.zeros(2, 3, dtype=torch.int64), [1, 2, 3])
