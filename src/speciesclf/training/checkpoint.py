"""Resumable training: the whole state of a run after each finished epoch, so a killed run continues, not restarts.

DVC removes a stage's outputs before running it, so the state cannot live in them: it is a folder of its own
(``checkpoints/<run>`` in ``dvc.yaml``, git-ignored), written whole after every epoch and removed by the stage once
the model is saved. It holds the weights, the optimiser and scheduler, every random generator the loop draws from,
early stopping's best weights and the history so far; on CPU a resumed run therefore ends with the same bytes as
an uninterrupted one.

A state is used only by the run that wrote it: its *fingerprint* covers the run's settings (model, loss, training
params, device), the feature files and the code. Anything else found there is discarded with a message.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from speciesclf.files import atomic_path

__all__ = ["TrainingState", "code_files", "fingerprint"]

STATE_FILE = "state.pt"


def fingerprint(settings: dict[str, Any], files: Iterable[str | os.PathLike[str]]) -> str:
    """sha256 of the settings (as sorted JSON) and of each file's name and content, in sorted order."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in sorted(Path(f) for f in files):
        with open(path, "rb") as f:
            digest.update(f"\0{path.name}\0{hashlib.file_digest(f, 'sha256').hexdigest()}".encode())
    return digest.hexdigest()


def code_files() -> list[Path]:
    """Every source file of this package: a code change invalidates a saved state, whichever module it touched."""
    return sorted(Path(__file__).resolve().parents[1].rglob("*.py"))


class TrainingState:
    """The per-epoch state of one run in ``folder``, valid only for runs with the same ``fingerprint``."""

    def __init__(
        self, folder: str | os.PathLike[str], fingerprint: str, log: Callable[[str], None] | None = print
    ) -> None:
        self.folder, self.fingerprint, self.log = Path(folder), fingerprint, log

    @property
    def path(self) -> Path:
        return self.folder / STATE_FILE

    def load(self, device: torch.device) -> dict[str, Any] | None:
        """The saved state if it belongs to this run; else ``None``, after removing what was there."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as exc:  # truncated or foreign file: starting afresh loses only time
            self._discard_with(f"unreadable ({type(exc).__name__})")
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            self._discard_with("made with other params, data or code")
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` whole (a kill during the write leaves the previous epoch's state). A failed first
        write (a full disk, a file-size limit) leaves no empty folder behind."""
        # serialised in memory, then written by Python: a failed write is then an OSError naming the file (torch's
        # own writer reports it as "iostream error", naming nothing)
        buf = io.BytesIO()
        torch.save({**state, "fingerprint": self.fingerprint}, buf)
        first = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(self.path) as tmp:
                tmp.write_bytes(buf.getvalue())
        except BaseException:
            if first:
                self.discard()
            raise

    def discard(self) -> None:
        """Remove the state, and the folders above it (up to the working directory) it leaves empty: a finished
        run leaves nothing behind."""
        shutil.rmtree(self.folder, ignore_errors=True)
        cwd, parent = Path.cwd(), self.folder.resolve().parent
        while cwd in parent.parents and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    def _discard_with(self, why: str) -> None:
        if self.log:
            self.log(f"training state {self.path}: {why}; starting from epoch 1")
        shutil.rmtree(self.folder, ignore_errors=True)
