"""The Markdown of the reports (the study's, selection's, detection's, the experiments'): numbers in cells and
tables, written one way everywhere."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["MISSING", "cell", "head", "mean_sd", "row"]

MISSING = "–"  # a score that does not exist: no rare species in the split, a run not trained


def cell(value: Any, signed: bool = False, spec: str = ".3f") -> str:
    """A value as a report writes it: a float in ``spec`` (``signed``: with its sign, as a difference), None as
    :data:`MISSING`, anything else (a count, a word) as it is."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return format(value, ("+" if signed else "") + spec)
    return str(value)


def mean_sd(mean: float, sd: float) -> str:
    """A mean and its standard deviation: ``0.812 ± 0.034``."""
    return f"{cell(mean)} ± {cell(sd)}"


def row(cells: Iterable[Any]) -> str:
    """One row of a table, its cells as they are (format them with :func:`cell` first)."""
    return "| " + " | ".join(map(str, cells)) + " |"


def head(columns: Iterable[str]) -> list[str]:
    """A table's heading row and the rule under it."""
    columns = list(columns)
    return [row(columns), "|---" * len(columns) + "|"]
