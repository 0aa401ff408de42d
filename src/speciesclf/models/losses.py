r"""Focal loss for softmax species classifiers (functional :func:`focal_loss` + module :class:`FocalLoss`).

Per sample :math:`i` with logits :math:`z_i \in \mathbb{R}^C` and label :math:`y_i`:

.. math::

    \ell_i = -\alpha_{y_i} \, (1 - p_{y_i})^{\gamma} \, \log p_{y_i},
    \qquad \log p = \operatorname{log\_softmax}(z_i)

(Lin et al., 2017, "Focal Loss for Dense Object Detection", ICCV). :math:`\gamma \ge 0` down-weights
samples the model already classifies confidently; :math:`\gamma = 0` is plain cross-entropy.

Shapes: ``logits`` is ``(N, C)`` floating point, ``target`` is ``(N,)`` int64 with values in ``[0, C)``.
The result is a scalar for ``reduction="mean"``/``"sum"`` and ``(N,)`` for ``"none"``. Half/bfloat16
logits are upcast and the loss is returned in float32 (float64 logits stay float64).

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FocalLoss", "effective_number_weights", "focal_loss"]

Reduction = Literal["mean", "sum", "none"]
AlphaLike = float | int | Sequence[float] | Tensor | None

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
