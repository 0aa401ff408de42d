"""Shared entry point of the stage scripts: bad params or bad input end the stage with one clear line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import torch

from speciesclf.params import ParamsError

__all__ = ["run_stage", "set_threads"]


def set_threads(threads: int) -> None:
    """``threads`` > 0 pins torch's intra-op threads (two queue workers on two cores must not oversubscribe)."""
    if threads > 0:
        torch.set_num_threads(threads)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; expected errors print one line to stderr and exit 2, without a traceback."""
    try:
        main()
    except ParamsError as exc:
        print(f"params.yaml: {exc}", file=sys.stderr)
        sys.exit(2)
    except (ValueError, FileNotFoundError) as exc:
        if os.environ.get("SPECIESCLF_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
