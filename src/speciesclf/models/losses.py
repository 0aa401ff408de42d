r"""Losses for long-tailed species classification.

* :func:`focal_loss` / :class:`FocalLoss`: softmax focal loss, optionally class-balanced (Lin et al., 2017).
* :func:`logit_adjusted_cross_entropy` / :class:`LogitAdjustedLoss`: logit-adjusted cross-entropy
  (Menon et al., 2021).
* :func:`balanced_softmax_loss` / :class:`BalancedSoftmaxLoss`: balanced softmax (Ren et al., 2020).
* :func:`inverse_frequency_weights` / :class:`ClassWeightedCrossEntropy`: inverse-class-frequency weighted
  cross-entropy (the study's Phase 1).
* :func:`adjust_logits`: post-hoc logit adjustment at prediction time (Menon et al., 2021).
* :func:`build_loss`: the loss module a run's loss spec names (:func:`speciesclf.runs.loss_recipe`).

Shapes: ``logits`` is ``(N, C)`` floating point, ``target`` is ``(N,)`` int64 with values in ``[0, C)``,
``class_counts`` is ``(C,)`` (training samples per class, each finite and > 0). Every loss returns a
scalar for ``reduction="mean"``/``"sum"`` and ``(N,)`` for ``"none"``. Half/bfloat16 logits are upcast and
the result is returned in float32 (float64 logits stay float64).

Focal loss
----------

Per sample :math:`i` with logits :math:`z_i \in \mathbb{R}^C` and label :math:`y_i`:

.. math::

    \ell_i = -\alpha_{y_i} \, (1 - p_{y_i})^{\gamma} \, \log p_{y_i},
    \qquad \log p = \operatorname{log\_softmax}(z_i)

(Lin et al., 2017, "Focal Loss for Dense Object Detection", ICCV). :math:`\gamma \ge 0` down-weights
samples the model already classifies confidently; :math:`\gamma = 0` is plain cross-entropy.

What α means here. RetinaNet's α = 0.25 weights the *positive* class of a per-class sigmoid (one binary
problem per class, α for positives, 1 − α for negatives). A softmax over species has no positive/negative
split, so:

* a float α only rescales the loss, every reduction included: it changes the effective learning rate,
  not the class balance;
* a per-class α (length C) behaves exactly like ``weight`` of :class:`torch.nn.CrossEntropyLoss`,
  including the weighted mean :math:`\sum_i \ell_i / \sum_i \alpha_{y_i}` for ``reduction="mean"``.
  Because of that normalisation a constant per-class α = a gives the *unscaled* mean, unlike float a.

:meth:`FocalLoss.balanced` derives per-class α from training class counts with the "effective number of
samples" rule of Cui et al., 2019, "Class-Balanced Loss Based on Effective Number of Samples", CVPR:
:math:`w_c = (1 - \beta) / (1 - \beta^{n_c})`, normalised so that :math:`\sum_c w_c = C`.

Label smoothing ε follows :func:`torch.nn.functional.cross_entropy` exactly, weights included:

.. math::

    \ell_i = (1 - p_{y_i})^{\gamma} \Big[ (1 - \varepsilon)\, \alpha_{y_i} (-\log p_{y_i})
             + \tfrac{\varepsilon}{C} \sum_c \alpha_c (-\log p_{i,c}) \Big]

i.e. the whole smoothed per-sample loss is modulated by :math:`(1 - p_{y_i})^{\gamma}` (the factor uses
the labelled class only), and the mean still divides by :math:`\sum_i \alpha_{y_i}`. With γ = 0 this is
``F.cross_entropy(logits, target, weight=alpha, label_smoothing=ε)`` in value and gradient.

Logit adjustment and balanced softmax
-------------------------------------

With training class priors :math:`\pi_c = n_c / \sum_k n_k` and a temperature :math:`\tau \ge 0`, the
logit-adjusted loss of Menon et al., 2021, "Long-tail learning via logit adjustment", ICLR, is

.. math::

    \ell_i = -\log \frac{e^{z_{i,y_i} + \tau \log \pi_{y_i}}}{\sum_c e^{z_{i,c} + \tau \log \pi_c}}
           = \operatorname{CE}(z_i + \tau \log \pi, \, y_i).

Adding the log prior during training only makes the model learn the *balanced* scores, so its raw logits
are used as they are at prediction time. :math:`\tau = 1` is the paper's default; :math:`\tau = 0` is plain
cross-entropy. Label smoothing ε applies to the adjusted softmax, as ``F.cross_entropy`` does.

The balanced softmax of Ren et al., 2020, "Balanced Meta-Softmax for Long-Tailed Visual Recognition",
NeurIPS, is :math:`\operatorname{CE}(z_i + \log n, \, y_i)`. Since
:math:`\log n_c = \log \pi_c + \log \sum_k n_k`, it adds the same constant to every logit of a sample, which
the softmax ignores: balanced softmax *is* logit adjustment with :math:`\tau = 1`, in value and gradient.

Post-hoc logit adjustment (:func:`adjust_logits`, Menon et al.'s post-hoc variant) instead trains with plain
cross-entropy and predicts :math:`\arg\max_c \, z_c - \tau \log \pi_c`. Do not apply it to a model trained
with a logit-adjusted loss, which would correct for the priors twice.

Inverse-frequency class weights
-------------------------------

:func:`inverse_frequency_weights` gives :math:`w_c \propto n_c^{-p}` (``power`` :math:`p \ge 0`;
:math:`p = 1` is inverse class frequency, :math:`p = 1/2` its square root), normalised so that
:math:`\sum_c w_c = C` like :func:`effective_number_weights`. :class:`ClassWeightedCrossEntropy` is
``F.cross_entropy(logits, target, weight=w)``: for ``reduction="mean"`` it is the weighted mean
:math:`\sum_i w_{y_i} \ell_i / \sum_i w_{y_i}`, so the normalisation of :math:`w` does not change the mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speciesclf.choices import LOSSES
from speciesclf.limits import one_of, refusal

__all__ = [
    "BalancedSoftmaxLoss",
    "ClassWeightedCrossEntropy",
    "FocalLoss",
    "LogitAdjustedLoss",
    "adjust_logits",
    "balanced_softmax_loss",
    "build_loss",
    "effective_number_weights",
    "focal_loss",
    "inverse_frequency_weights",
    "logit_adjusted_cross_entropy",
]

Reduction = Literal["mean", "sum", "none"]
AlphaLike = float | int | Sequence[float] | Tensor | None
CountsLike = Sequence[float] | Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _check_gamma(gamma: float | Tensor) -> float:
    try:
        value = float(gamma)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"gamma must be a real number >= 0, got {gamma!r}") from exc
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"gamma must be finite and >= 0, got {value}")
    return value


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _check_label_smoothing(label_smoothing: float) -> float:
    try:
        value = float(label_smoothing)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}") from exc
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return value


def _check_alpha(alpha: AlphaLike) -> Tensor | None:
    """Normalise alpha to None, a 0-dim float tensor (uniform factor) or a 1-D float tensor (per class)."""
    if alpha is None:
        return None
    if isinstance(alpha, bool):
        raise ValueError(f"alpha must be a float, a per-class sequence or a tensor, got {alpha!r}")
    if isinstance(alpha, Tensor):
        tensor = alpha.detach()
        if not tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
    else:
        try:
            tensor = torch.as_tensor(alpha, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"alpha must be a float, a per-class sequence or a tensor, got {alpha!r}") from exc
    if tensor.ndim > 1:
        raise ValueError(f"alpha must be a scalar or 1-D (one value per class), got shape {tuple(tensor.shape)}")
    if tensor.ndim == 1 and tensor.numel() == 0:
        raise ValueError("alpha must not be empty")
    if not bool(torch.isfinite(tensor).all()) or bool((tensor < 0).any()):
        raise ValueError(f"alpha values must be finite and >= 0, got {tensor.tolist()}")
    return tensor


def _check_inputs(logits: Tensor, target: Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (N, C), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    if target.ndim != 1:
        raise ValueError(f"target must be 1-D (N,), got shape {tuple(target.shape)}")
    if target.dtype != torch.int64:
        raise ValueError(f"target must be int64 class indices, got {target.dtype}")
    if target.shape[0] != logits.shape[0]:
        raise ValueError(f"target and logits disagree on N: target has {target.shape[0]}, logits has {logits.shape[0]}")
    num_classes = logits.shape[1]
    # One host sync per call; the alternative on CUDA is an opaque device-side assert in gather.
    bad = (target < 0) | (target >= num_classes)
    if target.numel() and bool(bad.any()):
        index = int(bad.nonzero()[0, 0])
        raise ValueError(f"target values must be in [0, {num_classes}), got {int(target[index])} at position {index}")


def _focal_loss(
    logits: Tensor,
    target: Tensor,
    gamma: float,
    alpha: Tensor | None,
    reduction: str,
    label_smoothing: float,
) -> Tensor:
    """Core computation; gamma/alpha/reduction/label_smoothing are already validated."""
    _check_inputs(logits, target)
    num_classes = logits.shape[1]
    dtype = torch.promote_types(logits.dtype, torch.float32)  # half/bf16 -> float32, float64 stays
    log_p = F.log_softmax(logits.to(dtype), dim=1)
    log_p_y = log_p.gather(1, target.unsqueeze(1)).squeeze(1)

    weight: Tensor | None = None
    if alpha is not None and alpha.ndim == 1:
        if alpha.shape[0] != num_classes:
            raise ValueError(f"alpha has {alpha.shape[0]} per-class values but logits have C={num_classes}")
        weight = alpha.to(device=log_p.device, dtype=dtype)

    # Mirrors F.cross_entropy: weighted NLL plus a smoothing term that weights each class by weight[c].
    if weight is None:
        weight_y = None
        loss = -log_p_y
        if label_smoothing > 0:
            loss = (1 - label_smoothing) * loss - (label_smoothing / num_classes) * log_p.sum(dim=1)
    else:
        weight_y = weight.gather(0, target)
        loss = -weight_y * log_p_y
        if label_smoothing > 0:
            smooth = -(log_p * weight).sum(dim=1)
            loss = (1 - label_smoothing) * loss + (label_smoothing / num_classes) * smooth

    if gamma != 0:  # gamma == 0 skips the factor so the loss is cross-entropy bit for bit
        # 1 - p_y as -expm1(log p_y) keeps precision when p_y -> 1 (1 - exp() would cancel to 0).
        # The clamp bounds d(x^γ)/dx = γ x^(γ-1) <= 1/min (≈1e19 in float32) for γ < 1, so the backward
        # pass cannot overflow to inf/NaN; below min the factor is < min^γ, i.e. negligible anyway.
        floor = math.sqrt(torch.finfo(dtype).tiny)
        one_minus_p = (-torch.expm1(log_p_y)).clamp_min(floor)
        loss = loss * one_minus_p.pow(gamma)

    if alpha is not None and alpha.ndim == 0:
        loss = loss * alpha.to(device=loss.device, dtype=dtype)

    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if weight_y is not None:
        return loss.sum() / weight_y.sum()  # CrossEntropyLoss(weight=...) semantics
    return loss.mean()


def focal_loss(
    logits: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    alpha: AlphaLike = None,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Softmax focal loss :math:`-\alpha_{y} (1 - p_{y})^{\gamma} \log p_{y}` (see the module docstring).

    Args:
        logits: ``(N, C)`` unnormalised scores, any floating dtype (half/bf16 are computed in float32).
        target: ``(N,)`` int64 class indices in ``[0, C)``.
        gamma: focusing parameter, ``>= 0``; 0 gives cross-entropy.
        alpha: ``None`` (no weighting), a float / 0-dim tensor (uniform factor on the loss, every
            reduction), or ``C`` per-class weights (like ``weight`` of ``nn.CrossEntropyLoss``, with the
            weighted mean for ``reduction="mean"``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (returns ``(N,)``).
        label_smoothing: ε in ``[0, 1]``, as in ``F.cross_entropy``; the focal factor multiplies the whole
            smoothed per-sample loss.

    Returns:
        The loss, float32 (float64 for float64 logits).

    Raises:
        ValueError: on an invalid argument; the message names it.
    """
    return _focal_loss(
        logits,
        target,
        _check_gamma(gamma),
        _check_alpha(alpha),
        _check_reduction(reduction),
        _check_label_smoothing(label_smoothing),
    )


def effective_number_weights(counts: Sequence[int] | Tensor, beta: float = 0.999) -> Tensor:
    r"""Class-balanced weights of Cui et al. (2019), normalised to sum to ``C``.

    :math:`w_c = (1 - \beta) / (1 - \beta^{n_c})` (the inverse effective number of samples of class c),
    then :math:`w \leftarrow C\, w / \sum_c w_c`. ``beta=0`` gives all ones; ``beta -> 1`` approaches
    inverse-frequency weighting.

    Args:
        counts: ``(C,)`` training samples per class, each ``>= 1``.
        beta: in ``[0, 1)``.

    Returns:
        ``(C,)`` float32 tensor.
    """
    try:
        beta_f = float(beta)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"beta must be a number in [0, 1), got {beta!r}") from exc
    if not 0.0 <= beta_f < 1.0:  # also rejects NaN
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    n = torch.as_tensor(counts).detach().to(device="cpu", dtype=torch.float64)
    if n.ndim != 1 or n.numel() == 0:
        raise ValueError(f"counts must be a non-empty 1-D sequence (one count per class), got shape {tuple(n.shape)}")
    bad = ~(n >= 1)  # catches NaN too
    if bool(bad.any()):
        index = int(bad.nonzero()[0, 0])
        raise ValueError(f"counts must all be >= 1, but class {index} has count {n[index].item():g}")
    if beta_f == 0.0:
        return torch.ones(n.numel(), dtype=torch.float32)
    # 1 - β^n computed as -expm1(n log β): exact for β close to 1, where β^n ≈ 1 would cancel.
    effective = -torch.expm1(n * math.log(beta_f)) / (1.0 - beta_f)
    weights = 1.0 / effective
    return (weights * (n.numel() / weights.sum())).to(torch.float32)


class FocalLoss(nn.Module):
    r"""Module form of :func:`focal_loss`.

    Per-class ``alpha`` (and a float ``alpha``, as a 0-dim tensor) is a non-persistent buffer: ``.to()``
    moves/casts it with the module, but it is not saved in ``state_dict`` so checkpoints do not depend on
    the loss configuration.

    Example:
        >>> criterion = FocalLoss.balanced([900, 90, 10], beta=0.999, gamma=2.0)
        >>> loss = criterion(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    """

    alpha: Tensor | None

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: AlphaLike = None,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.gamma = _check_gamma(gamma)
        self.reduction = _check_reduction(reduction)
        self.label_smoothing = _check_label_smoothing(label_smoothing)
        # Validated once here so forward does no per-step host syncs for alpha.
        alpha_t = _check_alpha(alpha)
        self.register_buffer("alpha", None if alpha_t is None else alpha_t.clone(), persistent=False)

    @classmethod
    def balanced(
        cls,
        counts: Sequence[int] | Tensor,
        beta: float = 0.999,
        gamma: float = 2.0,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
    ) -> FocalLoss:
        """Focal loss with per-class α from :func:`effective_number_weights` (Cui et al., 2019)."""
        return cls(
            gamma=gamma,
            alpha=effective_number_weights(counts, beta),
            reduction=reduction,
            label_smoothing=label_smoothing,
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return _focal_loss(logits, target, self.gamma, self.alpha, self.reduction, self.label_smoothing)

    def extra_repr(self) -> str:
        if self.alpha is None:
            alpha_repr = "None"
        elif self.alpha.ndim == 0:
            alpha_repr = f"{self.alpha.item():g}"
        else:
            alpha_repr = "[" + ", ".join(f"{v:.4g}" for v in self.alpha.tolist()) + "]"
        parts = [f"gamma={self.gamma:g}", f"alpha={alpha_repr}", f"reduction={self.reduction!r}"]
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing:g}")
        return ", ".join(parts)


# --- logit adjustment, balanced softmax, inverse-frequency weights ---------------------------------------


def _check_tau(tau: float | Tensor) -> float:
    try:
        value = float(tau)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"tau must be a real number >= 0, got {tau!r}") from exc
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"tau must be finite and >= 0, got {value}")
    return value


def _check_power(power: float | Tensor) -> float:
    try:
        value = float(power)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"power must be a real number >= 0, got {power!r}") from exc
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"power must be finite and >= 0, got {value}")
    return value


def _check_class_counts(class_counts: CountsLike) -> Tensor:
    """Validate training samples per class; returns them as a ``(C,)`` float64 CPU tensor."""
    try:
        n = torch.as_tensor(class_counts).detach()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"class_counts must be a 1-D sequence of numbers, got {class_counts!r}") from exc
    if n.dtype == torch.bool or n.is_complex():
        raise ValueError(f"class_counts must be real numbers, got dtype {n.dtype}")
    n = n.to(device="cpu", dtype=torch.float64)
    if n.ndim != 1 or n.numel() == 0:
        raise ValueError(f"class_counts must be non-empty and 1-D (one count per class), got shape {tuple(n.shape)}")
    bad = ~(torch.isfinite(n) & (n > 0))  # catches NaN too
    if bool(bad.any()):
        index = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"class_counts must all be finite and > 0, but class {index} has count {n[index].item():g} "
            "(a class with no training samples has prior 0, i.e. log prior -inf: drop it or give it a pseudo-count)"
        )
    return n


def _log_prior(counts: Tensor) -> Tensor:
    r""":math:`\log \pi_c = \log n_c - \log \sum_k n_k` of validated float64 counts."""
    return counts.log() - counts.sum().log()


def _per_class(values: Tensor, num_classes: int, like: Tensor, dtype: torch.dtype) -> Tensor:
    """Check a ``(C,)`` per-class tensor against the logits' C and move it to their device in ``dtype``."""
    if values.shape[0] != num_classes:
        raise ValueError(f"class_counts has {values.shape[0]} entries but logits have C={num_classes} classes")
    return values.to(device=like.device, dtype=dtype)


def _adjusted_cross_entropy(
    logits: Tensor,
    target: Tensor,
    log_offset: Tensor,
    tau: float,
    reduction: str,
    label_smoothing: float,
) -> Tensor:
    """``F.cross_entropy(logits + tau * log_offset, target)``; tau/reduction/label_smoothing already validated."""
    _check_inputs(logits, target)
    dtype = torch.promote_types(logits.dtype, torch.float32)  # half/bf16 -> float32, float64 stays
    offset = _per_class(log_offset, logits.shape[1], logits, dtype)
    adjusted = logits.to(dtype) + tau * offset
    return F.cross_entropy(adjusted, target, reduction=reduction, label_smoothing=label_smoothing)


def logit_adjusted_cross_entropy(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    tau: float = 1.0,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Logit-adjusted cross-entropy :math:`\operatorname{CE}(z + \tau \log \pi, y)` (Menon et al., 2021).

    :math:`\pi_c = n_c / \sum_k n_k` are the training class priors (see the module docstring). Use the raw
    logits of a model trained with this loss for prediction; do not also apply :func:`adjust_logits`.

    Args:
        logits: ``(N, C)`` unnormalised scores, any floating dtype (half/bf16 are computed in float32).
        target: ``(N,)`` int64 class indices in ``[0, C)``.
        class_counts: ``(C,)`` training samples per class, each finite and ``> 0``; only their ratios matter.
        tau: temperature, finite and ``>= 0``; 1 is the paper's default, 0 gives cross-entropy.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (returns ``(N,)``).
        label_smoothing: ε in ``[0, 1]``, as in ``F.cross_entropy``, applied to the adjusted softmax.

    Returns:
        The loss, float32 (float64 for float64 logits).

    Raises:
        ValueError: on an invalid argument; the message names it.
    """
    return _adjusted_cross_entropy(
        logits,
        target,
        _log_prior(_check_class_counts(class_counts)),
        _check_tau(tau),
        _check_reduction(reduction),
        _check_label_smoothing(label_smoothing),
    )


def balanced_softmax_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Balanced softmax :math:`\operatorname{CE}(z + \log n, y)` (Ren et al., 2020).

    :math:`\log n_c` and :math:`\log \pi_c` differ by :math:`\log \sum_k n_k`, the same for every class, which
    the softmax ignores: this equals :func:`logit_adjusted_cross_entropy` with ``tau=1`` in value and gradient.

    Args:
        logits: ``(N, C)`` unnormalised scores, any floating dtype (half/bf16 are computed in float32).
        target: ``(N,)`` int64 class indices in ``[0, C)``.
        class_counts: ``(C,)`` training samples per class, each finite and ``> 0``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (returns ``(N,)``).
        label_smoothing: ε in ``[0, 1]``, as in ``F.cross_entropy``, applied to the adjusted softmax.

    Returns:
        The loss, float32 (float64 for float64 logits).

    Raises:
        ValueError: on an invalid argument; the message names it.
    """
    return _adjusted_cross_entropy(
        logits,
        target,
        _check_class_counts(class_counts).log(),
        1.0,
        _check_reduction(reduction),
        _check_label_smoothing(label_smoothing),
    )


def adjust_logits(logits: Tensor, class_counts: CountsLike, tau: float = 1.0) -> Tensor:
    r"""Post-hoc logit adjustment :math:`z - \tau \log \pi` for prediction (Menon et al., 2021).

    For a model trained with plain (or class-unaware) cross-entropy, ``adjust_logits(z, counts).argmax(-1)``
    trades head-class accuracy for tail-class accuracy; ``tau=1`` targets the balanced error. Not for models
    trained with :class:`LogitAdjustedLoss` / :class:`BalancedSoftmaxLoss`, which are adjusted already.

    Args:
        logits: ``(..., C)`` unnormalised scores, any floating dtype.
        class_counts: ``(C,)`` training samples per class, each finite and ``> 0``.
        tau: temperature, finite and ``>= 0``; 0 returns the logits unchanged (upcast as below).

    Returns:
        ``(..., C)`` adjusted logits, float32 (float64 for float64 logits), differentiable in ``logits``.

    Raises:
        ValueError: on an invalid argument; the message names it.
    """
    if logits.ndim < 1:
        raise ValueError(f"logits must have a class dimension (..., C), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    tau_f = _check_tau(tau)
    dtype = torch.promote_types(logits.dtype, torch.float32)
    counts = _check_class_counts(class_counts)
    log_prior = _per_class(_log_prior(counts), logits.shape[-1], logits, dtype)
    return logits.to(dtype) - tau_f * log_prior


def inverse_frequency_weights(class_counts: CountsLike, power: float = 1.0) -> Tensor:
    r"""Inverse class-frequency weights :math:`w_c \propto n_c^{-p}`, normalised to sum to ``C``.

    ``power=1`` is inverse frequency, ``power=0.5`` its square root, ``power=0`` all ones. This is the limit
    of :func:`effective_number_weights` as ``beta -> 1``. Use as ``F.cross_entropy(..., weight=w)`` or via
    :class:`ClassWeightedCrossEntropy`.

    Args:
        class_counts: ``(C,)`` training samples per class, each finite and ``> 0``.
        power: exponent :math:`p`, finite and ``>= 0``.

    Returns:
        ``(C,)`` float32 tensor on the CPU.

    Raises:
        ValueError: on an invalid argument; the message names it.
    """
    p = _check_power(power)
    n = _check_class_counts(class_counts)
    log_w = -p * n.log()
    weights = torch.exp(log_w - log_w.max())  # largest weight 1 before normalising: no overflow/underflow to 0
    return (weights * (n.numel() / weights.sum())).to(torch.float32)


class LogitAdjustedLoss(nn.Module):
    r"""Module form of :func:`logit_adjusted_cross_entropy`.

    The log priors :math:`\log \pi` are a ``(C,)`` non-persistent float32 buffer ``log_prior``: ``.to()``
    moves/casts it with the module, and it is not saved in ``state_dict`` (as for :class:`FocalLoss`).

    Example:
        >>> criterion = LogitAdjustedLoss([900, 90, 10], tau=1.0)
        >>> loss = criterion(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    """

    log_prior: Tensor

    def __init__(
        self,
        class_counts: CountsLike,
        tau: float = 1.0,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.tau = _check_tau(tau)
        self.reduction = _check_reduction(reduction)
        self.label_smoothing = _check_label_smoothing(label_smoothing)
        log_prior = _log_prior(_check_class_counts(class_counts)).to(torch.float32)
        self.register_buffer("log_prior", log_prior, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return _adjusted_cross_entropy(logits, target, self.log_prior, self.tau, self.reduction, self.label_smoothing)

    def extra_repr(self) -> str:
        parts = [f"num_classes={self.log_prior.numel()}", f"tau={self.tau:g}", f"reduction={self.reduction!r}"]
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing:g}")
        return ", ".join(parts)


class BalancedSoftmaxLoss(LogitAdjustedLoss):
    r"""Balanced softmax (Ren et al., 2020): :class:`LogitAdjustedLoss` with ``tau=1``.

    Adding :math:`\log n` or :math:`\log \pi` to the logits differs by a per-sample constant that the softmax
    ignores, so this equals :func:`balanced_softmax_loss` in value and gradient.
    """

    def __init__(
        self,
        class_counts: CountsLike,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(class_counts, tau=1.0, reduction=reduction, label_smoothing=label_smoothing)


class ClassWeightedCrossEntropy(nn.Module):
    r"""Cross-entropy with per-class weights :func:`inverse_frequency_weights` (the study's Phase 1).

    Equals ``nn.CrossEntropyLoss(weight=inverse_frequency_weights(class_counts, power))`` with this module's
    input checks, half/bf16 upcast, and ``weight`` a non-persistent float32 buffer (moved/cast by ``.to()``,
    not saved in ``state_dict``). ``reduction="mean"`` is the weighted mean :math:`\sum_i w_{y_i} \ell_i /
    \sum_i w_{y_i}`.

    Example:
        >>> criterion = ClassWeightedCrossEntropy([900, 90, 10], power=1.0)
        >>> loss = criterion(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    """

    weight: Tensor

    def __init__(
        self,
        class_counts: CountsLike,
        power: float = 1.0,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.power = _check_power(power)
        self.reduction = _check_reduction(reduction)
        self.label_smoothing = _check_label_smoothing(label_smoothing)
        self.register_buffer("weight", inverse_frequency_weights(class_counts, self.power), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_inputs(logits, target)
        dtype = torch.promote_types(logits.dtype, torch.float32)
        weight = _per_class(self.weight, logits.shape[1], logits, dtype)
        return F.cross_entropy(
            logits.to(dtype), target, weight=weight, reduction=self.reduction, label_smoothing=self.label_smoothing
        )

    def extra_repr(self) -> str:
        weights = "[" + ", ".join(f"{v:.4g}" for v in self.weight.tolist()) + "]"
        parts = [f"power={self.power:g}", f"weight={weights}", f"reduction={self.reduction!r}"]
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing:g}")
        return ", ".join(parts)


def build_loss(loss: dict[str, Any] | None, train_counts: Sequence[int]) -> nn.Module:
    """The training loss a ``loss`` params mapping names; ``None`` → cross-entropy (the study's baseline).

    ``name`` (default ``focal``, the study's Phases 2A/2B) is one of :data:`LOSSES`; each reads its own keys, and
    every one reads ``label_smoothing``: ``focal`` γ ``gamma``, ``alpha`` (a number, ``'balanced'`` for Cui et al.
    weights with ``beta``, or null); ``class_weighted`` (Phase 1) ``power`` of the inverse class frequency;
    ``logit_adjusted`` (Menon et al. 2021) ``tau``; ``balanced_softmax`` (Ren et al. 2020) none. The class
    frequencies are ``train_counts``, the training windows per species.
    """
    if loss is None:
        return nn.CrossEntropyLoss()
    name = loss.get("name", "focal")
    smoothing = float(loss.get("label_smoothing", 0.0))
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=smoothing)
    if name == "class_weighted":
        return ClassWeightedCrossEntropy(train_counts, power=float(loss.get("power", 1.0)), label_smoothing=smoothing)
    if name == "logit_adjusted":
        return LogitAdjustedLoss(train_counts, tau=float(loss.get("tau", 1.0)), label_smoothing=smoothing)
    if name == "balanced_softmax":
        return BalancedSoftmaxLoss(train_counts, label_smoothing=smoothing)
    if name != "focal":
        raise ValueError(refusal("loss.name", name, one_of(LOSSES)))
    common = {"gamma": float(loss["gamma"]), "label_smoothing": smoothing}
    if loss.get("alpha") == "balanced":
        return FocalLoss.balanced(train_counts, beta=float(loss.get("beta", 0.999)), **common)
    alpha = loss.get("alpha")
    return FocalLoss(alpha=None if alpha is None else float(alpha), **common)
