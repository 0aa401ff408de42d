"""Progress on long work: plain lines in logs, a tqdm bar on a terminal, silence for short work."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speciesclf import progress as progress_module
from speciesclf.features.config import FeatureConfig
from speciesclf.features.store import featurize
from speciesclf.models.cnn import AudioCNN
from speciesclf.progress import progress
from speciesclf.training.config import TrainConfig
from speciesclf.training.trainer import Trainer
from tiny import FREQS, SR, _train_tiny_model, tone

# "featurize train: 100%|#####| 12/12 [00:02<00:00,  4.99 recording/s]": count, elapsed, time left and rate
LINE = r"{}: +(\d+)%\|[# 0-9]*\| (\d+)/(\d+) \[\d\d:\d\d<(?:\d\d:\d\d|\?), +[\d.?]+ {}/s\]"


@pytest.fixture
def every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "PLAIN_INTERVAL", 0.0)  # a plain line at every step, none held back


def test_off_a_terminal_each_step_is_a_plain_line_and_the_last_says_done(every_step: None) -> None:
    stream = io.StringIO()
    assert list(progress(iter(range(5)), "decode", "file", total=5, stream=stream)) == list(range(5))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    counts = [re.fullmatch(LINE.format("decode", "file"), line).groups() for line in lines]
    assert [(int(p), int(n), int(t)) for p, n, t in counts] == [(20 * k, k, 5) for k in range(6)]  # once each


def test_short_work_off_a_terminal_prints_nothing() -> None:
    stream = io.StringIO()
    assert list(progress(range(100), "decode", "file", stream=stream)) == list(range(100))
    assert stream.getvalue() == ""  # within PLAIN_INTERVAL (30 s): a small run's log reads as before


def _predict(model: Path, folder: Path, stderr: int | None, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "speciesclf.predict", str(model), str(folder)]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=120, env=env)


def test_predict_shows_progress_in_a_log_and_a_bar_on_a_terminal(tmp_path: Path) -> None:
    model = _train_tiny_model(tmp_path / "train")
    folder = tmp_path / "new"
    folder.mkdir()
    for k in range(4):
        sf.write(folder / f"r{k}.wav", tone(SR, 1.0, FREQS["cricket"], k), SR)
    (folder / "bad.wav").write_bytes(b"not audio")
    env = {**os.environ, "SPECIESCLF_PROGRESS_SECONDS": "0"}
    quiet = _predict(model, folder, subprocess.PIPE, {k: v for k, v in os.environ.items() if "PROGRESS" not in k})
    logged = _predict(model, folder, subprocess.PIPE, env)
    assert logged.returncode == quiet.returncode == 0 and logged.stdout == quiet.stdout  # the CSV is the same
    skipped = f"skipped {folder / 'bad.wav'}: not_audio: Error opening '{folder / 'bad.wav'}': Format not recognised."
    lines = quiet.stderr.splitlines()  # short work: no progress; the CSV on stdout, its provenance on stderr
    assert lines[0] == skipped and lines[2] == "predicted 4 recording(s), skipped 1" and len(lines) == 3
    assert re.fullmatch(
        rf"model {re.escape(str(model))} \(model.json sha256 [0-9a-f]{{12}}\), speciesclf \S+", lines[1]
    )
    assert "\r" not in logged.stderr
    bars = [line for line in logged.stderr.splitlines() if line.startswith("predict:")]
    assert re.fullmatch(LINE.format("predict", "file"), bars[-1]) and "| 5/5 [" in bars[-1]
    assert skipped in logged.stderr.splitlines()  # on a line of its own
    # a terminal: tqdm redraws one bar in place
    main, tty = pty.openpty()
    fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    terminal = _predict(model, folder, tty, env)
    os.close(tty)
    drawn = _read_all(main)
    assert terminal.returncode == 0 and terminal.stdout == quiet.stdout
    assert "\r" in drawn and re.search(r"predict: 100%\S*\| 5/5 \[", drawn) and "file/s]" in drawn


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the terminal's other end is closed: all read
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


def test_featurize_reports_each_split(every_step: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    rows = ["path,label,split,recording_id"]
    for k, split in enumerate(["train", "train", "train", "val", "test"]):
        sf.write(folder / f"r{k}.wav", tone(SR, 1.0, 500.0 * (1 + k % 2), k), SR)
        rows.append(f"audio/r{k}.wav,{'ab'[k % 2]},{split},r{k}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    config = FeatureConfig(sample_rate=SR, clip_seconds=1.0, train_hop_seconds=1.0)
    featurize(tmp_path / "manifest.csv", tmp_path / "features", config, workers=1)
    last = {}
    for line in capsys.readouterr().err.splitlines():
        last[line.split(":")[0]] = line
    assert sorted(last) == ["featurize test", "featurize train", "featurize val"]
    assert re.fullmatch(LINE.format("featurize train", "recording"), last["featurize train"])
    assert "| 3/3 [" in last["featurize train"] and "| 1/1 [" in last["featurize val"]


def test_a_training_epoch_shows_its_batches_when_the_run_logs(
    every_step: None, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = np.random.default_rng(0).standard_normal((40, 20, 48)).astype(np.float32), np.arange(40) % 2
    config = TrainConfig(epochs=1, batch_size=16, warmup_epochs=0, device="cpu", precision="fp32")
    Trainer(AudioCNN(2), config=config, log=print).fit(x, y, x, y)
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(LINE.format("epoch 1", "batch"), lines[-1]) and "| 3/3 [" in lines[-1]
    Trainer(AudioCNN(2), config=config, log=None).fit(x, y, x, y)
    assert capsys.readouterr().err == ""  # a silenced run (tests, DDP ranks other than 0) draws no bar
