"""Fault injection: real signals to real stage processes and to `dvc repro`, in a temporary git repository.

After each kill: no process of the stage survives, a re-run completes (training resumes from its last finished
epoch), no temporary output is left, and every output equals that of an uninterrupted run, byte for byte.
`pytest -m faults` runs these alone; `make test` (and so CI) runs them with the rest.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from dvcrepo import commit, copy_project, env, sh

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="stages die with their parent on Linux only"),
]

EPOCHS = 6


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project with prepare, featurize and train_baseline run once, uninterrupted: the reference."""
    repo = copy_project(tmp_path_factory.mktemp("faults"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["synthetic"].update(n_species=6, imbalance=2.0, clip_seconds=1.0)
    params["features"].update(clip_seconds=1.0, train_hop_seconds=0.5)
    params["train"].update(epochs=EPOCHS, warmup_epochs=1, patience=EPOCHS)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(repo, "project")
    sh(repo, "dvc", "repro", "train_baseline")
    commit(repo, "reference run")
    return repo


def _start(cwd: Path, cmd: list[str], new_session: bool = False, **env_vars: str | None) -> subprocess.Popen[str]:
    def child() -> None:
        # a shell's background job (CI's) inherits SIGINT ignored; a terminal's has the default
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if new_session:
            os.setsid()  # everything it starts shares its session id: survivors can be found

    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env={k: v for k, v in {**env(), "PYTHONUNBUFFERED": "1", **env_vars}.items() if v is not None},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=child,
    )


def _wait_for_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 120) -> list[str]:
    """Lines of ``proc``'s stdout up to the first matching ``pattern``."""
    lines: list[str] = []
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and sel.select(deadline - time.monotonic()):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if re.search(pattern, line):
                return lines
    proc.kill()
    raise AssertionError(f"no line {pattern!r} in:\n{''.join(lines)}{proc.stderr.read()}")


def _session(sid: int) -> list[psutil.Process]:
    """Live processes of session ``sid`` (zombies waiting for init to reap them are gone already)."""
    alive = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def _assert_session_ends(sid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (left := _session(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"still running after the kill: {[p.cmdline() for p in left]}"


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp")) if folder.exists() else []


def _train_cmd(out: Path) -> list[str]:
    return [sys.executable, "stages/train.py", "baseline", "data/features", f"{out}/model", f"{out}/curves",
            "--state", f"{out}/state"]  # fmt: skip


EXIT = {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 143, signal.SIGINT: 130}
STDERR = {signal.SIGKILL: "", signal.SIGTERM: "terminated\n", signal.SIGINT: "interrupted\n"}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_killed_training_stage_resumes_at_the_next_epoch_with_the_same_model(
    repo: Path, tmp_path: Path, sig: int
) -> None:
    out = tmp_path / "run"  # outside the repository: the dvc tests below check it for stray files
    proc = _start(repo, _train_cmd(out))
    _wait_for_line(proc, r"^epoch +2/")  # epoch 2's state is saved before its line is printed
    proc.send_signal(sig)
    printed, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (EXIT[sig], STDERR[sig]), printed
    assert not (out / "model").exists()
    saved = len(torch.load(out / "state/state.pt", weights_only=True)["history"])
    assert 2 <= saved < EPOCHS

    rerun = subprocess.run(_train_cmd(out), cwd=repo, env=env(), capture_output=True, text=True, check=True)
    assert f"resuming at epoch {saved + 1}: epochs 1-{saved} restored" in rerun.stdout
    assert re.findall(r"^epoch +(\d+)/", rerun.stdout, re.M) == [str(e) for e in range(saved + 1, EPOCHS + 1)]
    reference = repo / "models/baseline"
    assert (out / "model/model.pt").read_bytes() == (reference / "model.pt").read_bytes()
    assert (out / "model/model.json").read_bytes() == (reference / "model.json").read_bytes()
    steps = (out / "curves/plots/metrics/val_f1_macro.tsv").read_text().splitlines()[1:]
    assert [line.split("\t")[0] for line in steps] == [str(s) for s in range(EPOCHS)]  # one unbroken curve
    assert not (out / "state").exists() and _temps(out) == []


def _featurize_cmd(repo: Path, folder: Path, hop: float) -> list[str]:
    """featurize of the repo's prepared data into ``folder``/features, 0.1 s windows ``hop`` seconds apart."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["features"].update(clip_seconds=0.1, train_hop_seconds=hop, n_fft=256)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return [sys.executable, str(repo / "stages/featurize.py"), str(repo / "data/prepared"), "features"]


def _start_with_workers(folder: Path, cmd: list[str]) -> tuple[subprocess.Popen[str], list[psutil.Process]]:
    proc = _start(folder, cmd)
    stage = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while len(workers := stage.children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(workers) == 2, "featurize started no worker processes"
    return proc, workers


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_a_killed_featurize_leaves_no_worker_and_no_temporary_folder(repo: Path, tmp_path: Path, sig: int) -> None:
    # short windows at a tiny hop: 1801 per 1 s recording, so the workers are busy for a few seconds even on a fast
    # host (at 451 a window the run could end before the signal came)
    cmd = _featurize_cmd(repo, tmp_path, hop=0.0005)
    subprocess.run([*cmd[:-1], "reference"], cwd=tmp_path, env=env(), capture_output=True, check=True)
    proc, workers = _start_with_workers(tmp_path, cmd)
    time.sleep(0.2)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == EXIT[sig]
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"workers outlived their stage: {alive}"
    if sig == signal.SIGTERM:
        assert _temps(tmp_path) == []  # an orderly end removes its own temporary folder
    else:
        assert len(_temps(tmp_path)) == 1  # SIGKILL leaves one; the next run removes it

    subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, check=True)
    assert _temps(tmp_path) == []
    for f in sorted((tmp_path / "reference").iterdir()):
        assert (tmp_path / "features" / f.name).read_bytes() == f.read_bytes(), f.name


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_featurize_workers_busy_in_a_long_call_are_killed_not_waited_for(repo: Path, tmp_path: Path, sig: int) -> None:
    # 4501 windows per 1 s recording, about a second each, four recordings a task: a worker asked to stop would
    # finish its task first, seconds after the signal
    proc, workers = _start_with_workers(tmp_path, _featurize_cmd(repo, tmp_path, hop=0.0002))
    time.sleep(1.0)  # both inside their first task
    assert all(w.cpu_percent(interval=0.2) > 20 for w in workers), "the workers were not busy"
    signalled = time.monotonic()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    ended = time.monotonic() - signalled
    assert (proc.returncode, stderr) == (EXIT[sig], STDERR[sig])
    assert not psutil.wait_procs(workers, timeout=1)[1], "workers outlived their stage"
    assert ended < 1.0, f"the stage waited {ended:.1f} s for its workers"
    assert _temps(tmp_path) == [] and not (tmp_path / "features").exists()


def test_a_file_size_limit_while_saving_the_training_state_is_one_line_and_leaves_no_folder(
    repo: Path, tmp_path: Path
) -> None:
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    limit = functools.partial(resource.setrlimit, resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
    cmd = [sys.executable, str(repo / "stages/train.py"), "baseline", str(repo / "data/features"), "model", "curves"]
    out = subprocess.run(
        [*cmd, "--state", "checkpoints/baseline"], cwd=tmp_path, env=env(), capture_output=True, text=True,
        preexec_fn=limit, timeout=300,
    )  # fmt: skip
    assert (out.returncode, out.stderr) == (2, "error: checkpoints/baseline/state.pt: File too large\n")
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "model").exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_killed_dvc_repro_leaves_nothing_running_and_resumes(repo: Path, sig: int) -> None:
    reference = (repo / "models/baseline/model.pt").read_bytes()
    # with SHELL unset DVC runs the stage under /bin/sh; dash stays between DVC and the stage (bash would exec)
    dvc = _start(repo, ["dvc", "repro", "--force", "--single-item", "train_baseline"], new_session=True, SHELL=None)
    _wait_for_line(dvc, r"^epoch +2/")
    if sig == signal.SIGINT:
        os.killpg(dvc.pid, sig)  # Ctrl-C: the terminal signals the whole foreground process group
    else:
        dvc.send_signal(sig)  # DVC alone, as a scheduler or `kill` would
    dvc.communicate(timeout=60)
    _assert_session_ends(dvc.pid)
    assert (repo / "checkpoints/baseline/state.pt").exists()

    # the same command again (a plain `dvc repro` of a run DVC has cached checks the model out instead)
    rerun = sh(repo, "dvc", "repro", "--force", "--single-item", "train_baseline")
    assert "resuming at epoch" in rerun.stdout
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status", "train_baseline").stdout
    assert (repo / "models/baseline/model.pt").read_bytes() == reference
    assert not (repo / "checkpoints").exists() and _temps(repo / "models") == []
    untracked = sh(repo, "git", "status", "--porcelain", "--untracked-files=all").stdout.splitlines()
    assert [line for line in untracked if line.startswith("??")] == [], "a killed run left files behind"


def test_a_stale_temporary_folder_of_a_dead_process_is_removed_but_not_a_live_ones(tmp_path: Path) -> None:
    from speciesclf.files import atomic_dir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".features.{dead.stdout.strip()}.abc123.tmp"
    live = tmp_path / f".features.{os.getppid()}.def456.tmp"
    for folder in (stale, live):
        (folder / "sub").mkdir(parents=True)
    with atomic_dir(tmp_path / "features") as out:
        (out / "x").write_text("x")
    assert not stale.exists() and live.exists()
    shutil.rmtree(live)
