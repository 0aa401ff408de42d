"""The range a numeric setting must lie in, and the words a refusal uses, each written once: params.py and the
settings classes (``FeatureConfig``, ``TrainConfig``) check the same :class:`Limit` and refuse in the same words.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Limit", "one_of", "refusal"]


@dataclass(frozen=True)
class Limit:
    """A number from ``lower`` to ``upper`` (either may be absent); an open end excludes the bound itself."""

    lower: float | None = None
    upper: float | None = None
    lower_open: bool = False
    upper_open: bool = False
    integer: bool = False
    optional: bool = False  # null (None) is allowed too

    def admits(self, value: Any) -> bool:
        """Whether ``value`` keeps the limit: of the right type (never a bool), finite and within the bounds."""
        if value is None:
            return self.optional
        kind = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
            return False
        if self.lower is not None and (value <= self.lower if self.lower_open else value < self.lower):
            return False
        return not (self.upper is not None and (value >= self.upper if self.upper_open else value > self.upper))

    @property
    def rule(self) -> str:
        """The limit in words, as a refusal states it: e.g. ``an integer >= 1 and <= 128``."""
        bounds = []
        if self.lower is not None:
            bounds.append(f"{'>' if self.lower_open else '>='} {self.lower}")
        if self.upper is not None:
            bounds.append(f"{'<' if self.upper_open else '<='} {self.upper}")
        words = " ".join(("an integer" if self.integer else "a number", " and ".join(bounds))).strip()
        return f"{words} or null" if self.optional else words


def one_of(options: Sequence[str]) -> str:
    """A choice among names in words: ``one of a, b, c``."""
    return f"one of {', '.join(options)}"


def refusal(name: str, value: Any, rule: str) -> str:
    """The one line that refuses ``value`` for the setting ``name`` (a key path such as ``features.n_fft``)."""
    return f"{name}: got {value!r}; allowed: {rule}"
