"""Helpers for tests that run the real pipeline: a copy of the project in a temporary git repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's python, dvc and the stages' `python`


def env() -> dict[str, str]:
    """The environment of a pipeline command: the venv first on PATH."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def sh(repo: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, cwd=repo, env=env(), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def ran_stages(stdout: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` actually ran, from its output."""
    return {line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")}


def commit(repo: Path, message: str) -> None:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", message)


def copy_project(repo: Path) -> Path:
    """dvc.yaml, params.yaml, stages/, src/, recipes/ and .dvc/ config in a fresh git repo (no outputs, no cache)."""
    repo.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("stages", "src", ".dvc", "recipes"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
    (repo / ".gitignore").write_text("/data/\n/models/\n/checkpoints/\n")
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "ci@example.com")
    sh(repo, "git", "config", "user.name", "ci")
    return repo
