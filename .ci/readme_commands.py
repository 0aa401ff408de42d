"""Run the commands README.md shows, in order, as a newcomer types them after `make repro` and `make test`.

The commands are the `$ `-prompted lines of the README's ```console blocks (```bash blocks hold the set-up, which
CI runs itself). They run in one bash session, so an activation carries over, and the first failure stops it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

BLOCK = re.compile(r"^```console\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_commands(text: str) -> list[str]:
    return [line[2:] for block in BLOCK.findall(text) for line in block.splitlines() if line.startswith("$ ")]


def main(readme: str = "README.md") -> int:
    commands = readme_commands(Path(readme).read_text(encoding="utf-8"))
    if not commands:
        print(f"readme-commands: no commands found in {readme}", file=sys.stderr)
        return 1
    script = "set -euo pipefail\n" + "".join(f"printf '$ %s\\n' {shlex.quote(c)}\n{c}\n" for c in commands)
    # a CI machine may have no git identity; DVC's experiments commit
    env = {"GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.com", **os.environ}
    env.setdefault("GIT_COMMITTER_NAME", env["GIT_AUTHOR_NAME"])
    env.setdefault("GIT_COMMITTER_EMAIL", env["GIT_AUTHOR_EMAIL"])
    result = subprocess.run(["bash", "-c", script], env=env)
    print(f"readme-commands: {len(commands)} commands, exit {result.returncode}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
