"""Measuring a test's own process from outside it."""

from __future__ import annotations

import subprocess
import sys


def peak_rss_mb(code: str, timeout: float = 120) -> int:
    """Run ``code`` in a Python process of its own; its peak resident memory in MB (VmHWM: ``ru_maxrss`` would
    carry pytest's peak over the exec)."""
    report = "import re; print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) // 1024)"
    r = subprocess.run([sys.executable, "-c", f"{code}\n{report}"], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return int(r.stdout)
