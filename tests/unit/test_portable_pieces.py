"""Portable mode's pieces: the optimizer is AdamW, and pinning holds in the process that trains."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import torch

from speciesclf.portable import PINS, ExactSqrtAdamW


def _steps(make_optimizer, steps: int = 20) -> list[torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = make_optimizer(net.parameters())
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 16, generator=g), torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


def test_exact_sqrt_adamw_steps_as_torchs_adamw_within_rounding() -> None:
    ours = _steps(lambda p: ExactSqrtAdamW(p, lr=1e-2, weight_decay=1e-2))
    torchs = _steps(lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2))
    untrained = _steps(lambda p: torch.optim.AdamW(p, lr=0.0, weight_decay=0.0))
    for a, b, start in zip(ours, torchs, untrained, strict=True):
        assert not torch.equal(a, start)  # it moved the weights
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_exact_sqrt_adamw_resumes_from_its_state_dict_with_the_same_weights() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    opt = ExactSqrtAdamW([w], lr=0.1, weight_decay=0.0)
    for _ in range(3):
        w.grad = w.detach() * 2
        opt.step()
    saved, w_saved = copy.deepcopy(opt.state_dict()), w.detach().clone()
    w.grad = w.detach() * 2
    opt.step()
    w2 = torch.nn.Parameter(w_saved)
    opt2 = ExactSqrtAdamW([w2], lr=0.1, weight_decay=0.0)
    opt2.load_state_dict(saved)
    w2.grad = w2.detach() * 2
    opt2.step()
    assert torch.equal(w2, w)


def _pinned_process(precision: str, **env: str) -> list[str]:
    code = (
        "import os, torch; from speciesclf.portable import pin; torch.ones(3).sum(); "
        f"pin({precision!r}); "
        "print(torch.backends.cpu.get_cpu_capability(), torch.backends.mkldnn.enabled, torch.get_num_threads(), "
        "os.environ.get('MKL_CBWR'))"
    )
    clean = {k: v for k, v in os.environ.items() if k not in PINS}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_pin_restarts_the_process_with_the_kernels_pinned_though_an_op_had_run() -> None:
    capability, onednn, threads, cbwr = _pinned_process("portable")
    assert (capability, onednn, threads, cbwr) == ("DEFAULT", "False", "1", "COMPATIBLE")


def test_other_precisions_leave_the_process_as_it_is() -> None:
    capability, onednn, _, cbwr = _pinned_process("fp32")
    assert capability != "DEFAULT" or torch.backends.cpu.get_cpu_capability() == "DEFAULT"
    assert (onednn, cbwr) == ("True", "None")
