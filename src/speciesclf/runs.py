"""The study's runs and their names.

A run is a phase of the study (``baseline``, ``phase1``, ``phase2a``, ``phase2b``), one γ of the sweep
(``gamma_sweep/gamma_1.0``), one seed of Phase 3 (``phase3/seed_42``) or the ensemble of several (``ensemble``).
A run's name is its sub-path under each output folder that ``dvc.yaml`` passes to the stages (``models/``,
``metrics/train/``, ``metrics/eval/``, ``metrics/``). A run's loss is :func:`loss_recipe`'s.
"""

from __future__ import annotations

from typing import Any

from speciesclf.choices import LOSSES

__all__ = [
    "ENSEMBLE",
    "GAMMA_SWEEP",
    "GROUPS",
    "PHASE3",
    "PHASES",
    "loss_recipe",
    "phase3_run",
    "phase3_runs",
    "runs_of",
    "sweep_run",
    "sweep_runs",
]

PHASES = ("baseline", "phase1", "phase2a", "phase2b")  # the study's order: Phase 0 (baseline), 1, 2A, 2B
GAMMA_SWEEP = "gamma_sweep"  # the stage, its params section and its runs' parent folder
PHASE3 = "phase3"  # the study's named next step: its params section and its runs' parent folder
GROUPS = (*PHASES, GAMMA_SWEEP, PHASE3)  # what evaluate@<group> and ensemble.runs name
ENSEMBLE = "ensemble"  # the stage, its params section and its run: the mean of the runs in ensemble.runs


def sweep_run(gamma: float | str) -> str:
    """γ spelt as in params.yaml, as DVC's ``matrix`` spells it: ``1.0`` → ``gamma_sweep/gamma_1.0``."""
    return f"{GAMMA_SWEEP}/gamma_{gamma}"


def sweep_runs(gammas: list[float]) -> list[str]:
    """Run names of the sweep, from ``gamma_sweep.gammas`` as loaded from params.yaml."""
    return [sweep_run(g) for g in gammas]


def phase3_run(seed: int | str) -> str:
    """``42`` → ``phase3/seed_42``: one model of Phase 3's recipe, as DVC's ``matrix`` over ``phase3.seeds``."""
    return f"{PHASE3}/seed_{seed}"


def phase3_runs(seeds: list[int]) -> list[str]:
    return [phase3_run(s) for s in seeds]


def runs_of(group: str, params: dict[str, Any]) -> list[str]:
    """The runs a group stands for: a phase is one run, ``gamma_sweep`` every γ, ``phase3`` every seed."""
    if group == GAMMA_SWEEP:
        return sweep_runs(params[GAMMA_SWEEP]["gammas"])
    if group == PHASE3:
        return phase3_runs(params[PHASE3]["seeds"])
    return [group]


def loss_recipe(params: dict[str, Any], phase: str, gamma: float | str | None = None) -> dict[str, Any] | None:
    """The loss spec a run trains with (:func:`speciesclf.models.losses.build_loss` makes it), from ``params``.

    The study's baseline (Phase 0) trains with plain cross-entropy (None), Phase 1 with class-weighted cross-entropy
    (``phase1.power``), Phases 2A/2B and the sweep with the focal loss of the ``loss`` section (a sweep run's γ
    ``gamma`` replacing its own), Phase 3 with the loss ``phase3.loss`` names and the keys it reads."""
    if phase == "baseline":
        return None
    if phase == "phase1":
        return {"name": "class_weighted", "power": params["phase1"]["power"], "label_smoothing": 0.0}
    if phase == PHASE3:
        p3 = params[PHASE3]
        return {"name": p3["loss"], **{k: p3[k] for k in LOSSES[p3["loss"]]}, "label_smoothing": p3["label_smoothing"]}
    return {**params["loss"], "gamma": float(gamma)} if gamma is not None else dict(params["loss"])
