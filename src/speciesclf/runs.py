"""The study's runs and their names.

A run is a phase of the study (``baseline``, ``phase2a``, ``phase2b``) or one γ of the sweep
(``gamma_sweep/gamma_1.0``). A run's name is its sub-path under each output folder that ``dvc.yaml`` passes to the
stages (``models/``, ``metrics/train/``, ``metrics/eval/``, ``metrics/``).
"""

from __future__ import annotations

__all__ = ["GAMMA_SWEEP", "PHASES", "sweep_run", "sweep_runs"]

PHASES = ("baseline", "phase2a", "phase2b")
GAMMA_SWEEP = "gamma_sweep"  # the stage, its params section and its runs' parent folder


def sweep_run(gamma: float | str) -> str:
    """γ spelt as in params.yaml, as DVC's ``matrix`` spells it: ``1.0`` → ``gamma_sweep/gamma_1.0``."""
    return f"{GAMMA_SWEEP}/gamma_{gamma}"


def sweep_runs(gammas: list[float]) -> list[str]:
    """Run names of the sweep, from ``gamma_sweep.gammas`` as loaded from params.yaml."""
    return [sweep_run(g) for g in gammas]
