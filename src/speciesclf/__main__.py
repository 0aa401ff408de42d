"""`speciesclf COMMAND ...`, the console command installed with the package (also `python -m speciesclf`).

commands:
  predict MODEL_DIR INPUTS... [--hop S] [--format csv|raven|audacity] [--out PATH]
                                   species per window and recording, or detections as Raven / Audacity tables
  report SUMMARY --out MARKDOWN [--all-species]
                                   render a summary JSON (metrics/summary.json) as Markdown
  study DIR --data PATH [--csv FILE] [--recipe FILE]
                                   a study folder for a collection: `dvc repro DIR/dvc.yaml` then chooses its model

`speciesclf COMMAND --help` gives a command's options.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# imported only when chosen: `predict` loads no training or evaluation code
COMMANDS = {"predict": "speciesclf.predict", "report": "speciesclf.evaluation.report", "study": "speciesclf.study"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, *rest = argv
    if command not in COMMANDS:
        print(f"speciesclf: unknown command {command!r}; expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[command]).main(rest, prog=f"speciesclf {command}")


if __name__ == "__main__":
    sys.exit(main())
