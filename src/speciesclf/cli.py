"""The stage scripts' entry point: bad params or bad input end a stage with one clear line, not a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from speciesclf.params import ParamsError

__all__ = ["run_stage"]


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; expected errors print one line to stderr and exit 2 (``SPECIESCLF_DEBUG=1``: raise)."""
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
