"""Portable mode (``train.precision: portable``): the same bytes on any x86-64 CPU, training about 8 times slower.

By default torch picks its kernels by the CPU it finds: AVX-512 or AVX2 code in ATen, oneDNN's convolutions, MKL's
own dispatch, bf16 where the hardware has it. Each computes other last bits, and training then follows another
path (docs/reproducibility.md). Pinned here, as measured natively and under an emulated Haswell (qemu-user):

- ATen's generic kernels (``ATEN_CPU_CAPABILITY=default``): their vector width is fixed when torch is built, so
  sums are split the same way on every CPU;
- MKL's conditional numerical reproducibility (``MKL_CBWR=COMPATIBLE``): the features' FFTs and the dense layers;
- oneDNN off, fp32, one thread;
- AdamW's square root correctly rounded (:class:`ExactSqrtAdamW`): ``torch.sqrt`` on the CPU is not, and its last
  bit depends on the CPU; from the first step on the weights would part.

Both variables are read once, when torch first runs an op and when MKL starts, so :func:`pin` restarts the
stage's process with them set when they are not already (under an emulator, set them beforehand: a restarted
process would run natively).
"""

from __future__ import annotations

import math
import os
import sys

import torch

from speciesclf.choices import PORTABLE

__all__ = ["PINS", "ExactSqrtAdamW", "pin"]

PINS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


def pin(precision: str) -> None:
    """In portable mode, pin this process's kernels (see the module); else nothing."""
    if precision != PORTABLE:
        return
    missing = {k: v for k, v in PINS.items() if os.environ.get(k) != v}
    if missing:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **missing})
    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":  # an op ran before the variable was set
        raise RuntimeError("portable mode: ATen chose its kernels before ATEN_CPU_CAPABILITY was set")
    torch.backends.mkldnn.enabled = False
    torch.set_num_threads(1)  # a reduction split over threads sums in another order


class ExactSqrtAdamW(torch.optim.Optimizer):
    """AdamW (Loshchilov & Hutter 2019), one tensor at a time, its denominator's square root correctly rounded.

    Per parameter ``p`` with gradient ``g`` at step ``t``::

        p <- p * (1 - lr * wd)
        m <- b1 * m + (1 - b1) * g            v <- b2 * v + (1 - b2) * g^2
        p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    as ``torch.optim.AdamW`` computes it, except that ``sqrt(v)`` is taken in float64 and rounded once to float32,
    which every CPU does alike.
    """

    def __init__(self, params, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                m.lerp_(p.grad, 1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (v.double().sqrt().float() / math.sqrt(1 - b2**t)).add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"] / (1 - b1**t))
