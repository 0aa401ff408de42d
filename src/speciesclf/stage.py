"""The stage scripts' entry point: bad params or bad input end a stage with one clear line, not a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from speciesclf.params import ParamsError
from speciesclf.processes import Terminated, die_with_dvc, raise_on_signals

__all__ = ["run_stage"]


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``: expected errors print one line and exit 2, Ctrl-C prints one and exits 130,
    SIGTERM one and 143 (after the same clean-up as any error: no temporary output, no child process left).

    Started by DVC, the stage gets SIGTERM when DVC dies, even by SIGKILL, so it never outlives DVC and writes an
    output nobody will record. ``SPECIESCLF_DEBUG=1`` re-raises input errors with their traceback.
    """
    raise_on_signals()
    try:
        die_with_dvc()  # may signal at once (DVC already gone): inside the try, so that ends with one line too
        main()
    except ParamsError as exc:
        print(f"params.yaml: {exc}", file=sys.stderr)
        sys.exit(2)
    except (ValueError, OSError) as exc:  # bad input; a full disk or a file-size limit
        if os.environ.get("SPECIESCLF_DEBUG"):
            raise
        where = f"{exc.filename}: " if isinstance(exc, OSError) and exc.filename else ""
        print(f"error: {where}{exc.strerror if where else exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("terminated", file=sys.stderr)
        sys.exit(Terminated.exit_code)
