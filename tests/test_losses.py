"""Tests for speciesclf.losses: focal loss vs cross-entropy, an independent reference, numerics, checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from speciesclf.models.losses import FocalLoss, effective_number_weights, focal_loss

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
