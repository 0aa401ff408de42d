"""Names of the study's runs: where each model, its metrics and its curves live."""

from __future__ import annotations

__all__ = ["PHASES", "run_dir", "sweep_runs"]

PHASES = ("baseline", "phase2a", "phase2b")


def gamma_tag(gamma: float | str) -> str:
    """``1.0`` → ``gamma_1.0``, ``1`` → ``gamma_1``: γ spelt as in params.yaml, as DVC's matrix spells it."""
    return f"gamma_{gamma}"


def run_dir(phase: str, gamma: float | str | None = None) -> str:
    """``baseline`` → ``baseline``; sweep at γ=1 → ``gamma_sweep/gamma_1.0``."""
    return f"gamma_sweep/{gamma_tag(gamma)}" if phase == "sweep" and gamma is not None else phase


def sweep_runs(gammas: list[float]) -> list[str]:
    """Run names of the sweep, from ``sweep.gammas`` as loaded from params.yaml."""
    return [run_dir("sweep", g) for g in gammas]
