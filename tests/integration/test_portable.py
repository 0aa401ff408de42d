"""Portable mode against a second CPU: a tiny run's stages natively (AVX-512 here, or whatever this host has) and
under qemu-user emulating a Haswell (AVX2, no AVX-512), compared byte for byte.

The emulated stages get the pins in their environment beforehand: a stage that restarted itself to set them
(portable.pin) would leave the emulator, since qemu-user runs a program that it execs natively.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dvcrepo import ROOT, env
from speciesclf.portable import PINS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="qemu-user is not installed (.ci/run installs it)"),
]

EMULATED = ["qemu-x86_64", "-cpu", "Haswell"]
CAPS = {*PINS, "ONEDNN_MAX_CPU_ISA"}  # a capped CI run sets some: each run here says what it runs under
STAGES = [
    ["stages/prepare.py", "data/prepared"],
    ["stages/featurize.py", "data/prepared", "data/features"],
    ["stages/train.py", "baseline", "data/features", "models/baseline", "curves"],
]


def _project(folder: Path, precision: str) -> Path:
    folder.mkdir()
    params = {
        "defaults": [str(ROOT / "params.yaml")],
        "data": {"path": str(ROOT / "src/speciesclf/data/synth.py")},
        "synthetic": {"n_species": 3, "clip_seconds": 1.0, "min_clips": 4, "imbalance": 1.5, "clips_per_recording": 1},
        "features": {"clip_seconds": 1.0, "train_hop_seconds": 1.0},
        "train": {"epochs": 2, "batch_size": 4, "warmup_epochs": 1, "precision": precision},
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def _run(folder: Path, stage: list[str], emulated: bool, pinned: bool) -> None:
    cmd = [*(EMULATED if emulated else []), sys.executable, str(ROOT / stage[0]), *stage[1:]]
    plain = {k: v for k, v in env().items() if k not in CAPS}
    out = subprocess.run(
        cmd, cwd=folder, env={**plain, **(PINS if pinned else {})}, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-2000:]


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every feature and model file (not the curves: they hold wall-clock times)."""
    files = sorted(p for sub in ("data/features", "models") for p in (folder / sub).rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_a_tiny_portable_run_gives_the_same_bytes_on_an_emulated_other_cpu(tmp_path: Path) -> None:
    native, emulated = _project(tmp_path / "native", "portable"), _project(tmp_path / "emulated", "portable")
    for stage in STAGES:
        _run(native, stage, emulated=False, pinned=False)  # pin() restarts the stage with the variables set
        _run(emulated, stage, emulated=True, pinned=True)
    digests = _digests(native)
    assert "models/baseline/model.pt" in digests and "data/features/train_x.npy" in digests
    assert _digests(emulated) == digests


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() != "AVX512",
    reason="ATen runs AVX2 kernels here (an AVX2 host or a capped run), as on the emulated Haswell",
)
def test_without_portable_mode_the_emulated_cpu_computes_other_features(tmp_path: Path) -> None:
    """The control: the emulation does reach other kernels, so the test above could fail."""
    native, emulated = _project(tmp_path / "native", "fp32"), _project(tmp_path / "emulated", "fp32")
    for folder, on_qemu in ((native, False), (emulated, True)):
        _run(folder, STAGES[0], emulated=False, pinned=False)
        _run(folder, STAGES[1], emulated=on_qemu, pinned=False)
    assert (native / "data/prepared/report.json").read_bytes() == (emulated / "data/prepared/report.json").read_bytes()
    ours, theirs = (f / "data/features/train_x.npy" for f in (native, emulated))
    assert ours.read_bytes() != theirs.read_bytes()
