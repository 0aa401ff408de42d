"""The stages' entry point under real failures: a file-size limit, Ctrl-C, a bad feature setting."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _tiny_params(tmp_path: Path, **features: float) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["path"] = str(ROOT / params["data"]["path"])
    params["synthetic"].update(n_species=3, imbalance=1.0, clip_seconds=1.0)
    params["features"].update({"clip_seconds": 1.0, "train_hop_seconds": 1.0, **features})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # bytes; a 1 s clip at 16 kHz is 32 kB


def _run_limited(tmp_path: Path, *stage: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "stages" / stage[0]), *stage[1:]]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=120)


def test_a_file_size_limit_is_one_line_naming_the_file(tmp_path: Path) -> None:
    _tiny_params(tmp_path)
    r = _run_limited(tmp_path, "prepare.py", "prepared")  # libsndfile's write error, as an I/O error
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: .prepared.") and "-c0.wav: could not write audio (System error.)" in r.stderr
    subprocess.run([sys.executable, str(ROOT / "stages/prepare.py"), "prepared"], cwd=tmp_path, check=True)
    r = _run_limited(tmp_path, "featurize.py", "prepared", "features")  # numpy's write error (EFBIG)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.endswith(": File too large\n")
    assert not (tmp_path / "features").exists()  # nothing half-written left under the output's name


STAGE = """
import time
from speciesclf.stage import run_stage

class Finaliser:
    def __del__(self):  # Python drops an exception raised in here ("Exception ignored in ...")
        print("finalising", flush=True)
        time.sleep(2)

def main():
    print("started", flush=True)
    if FINALISER:
        Finaliser()  # collected at once: the signal arrives while its __del__ sleeps
    time.sleep(60)  # past the test's timeout: only the signal ends the stage in time

run_stage(main)
"""


@pytest.mark.parametrize("in_finaliser", [False, True], ids=["in_main", "in_a_finaliser"])
@pytest.mark.parametrize(
    ("sig", "code", "line"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_ctrl_c_and_sigterm_end_a_stage_with_one_line(
    tmp_path: Path, sig: int, code: int, line: str, in_finaliser: bool
) -> None:
    script = tmp_path / "slow_stage.py"
    script.write_text(STAGE.replace("FINALISER", str(in_finaliser)), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job (CI's, say) inherits SIGINT ignored, and Python then keeps it ignored:
        # give the stage the disposition a terminal gives it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout.readline() == "started\n"
    if in_finaliser:
        assert proc.stdout.readline() == "finalising\n"
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (code, f"{line}\n")


ORPHAN = """
import os, time
from speciesclf.stage import run_stage

def main():
    print(os.getpid(), flush=True)
    time.sleep(60)

run_stage(main)
"""

# a stand-in for `dvc repro`: runs the stage as DVC does, `SHELL -c cmd`, then waits to be killed
LAUNCHER = "import subprocess, sys, time; subprocess.Popen([sys.argv[1], '-c', sys.argv[2]]); time.sleep(60)"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a stage follows DVC's death on Linux only")
@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])  # dash stays between DVC and the stage; bash execs
@pytest.mark.parametrize("under_dvc", [True, False], ids=["started_by_dvc", "started_by_hand"])
def test_a_stage_ends_when_dvc_is_killed_but_outlives_any_other_parent(
    tmp_path: Path, shell: str, under_dvc: bool
) -> None:
    psutil = pytest.importorskip("psutil")
    (tmp_path / "stage.py").write_text(ORPHAN, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "DVC_STAGE"} | ({"DVC_STAGE": "train"} if under_dvc else {})
    cmd = [sys.executable, "-c", LAUNCHER, shell, f"{sys.executable} stage.py"]
    launcher = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stage = psutil.Process(int(launcher.stdout.readline()))
    launcher.kill()
    launcher.wait()
    try:
        if under_dvc:
            stage.wait(timeout=10)
            assert launcher.stderr.read() == "terminated\n"  # SIGTERM, handled: the stage unwound and cleaned up
        else:
            time.sleep(2)  # like `nohup`: a stage run by hand is tied to nothing
            assert stage.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    finally:
        if stage.is_running():
            stage.kill()


# DVC killed while the stage is still importing: the stage is an orphan before it can watch DVC
QUICK_LAUNCHER = "import subprocess, sys; subprocess.Popen([sys.argv[1], '-c', sys.argv[2]])"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a stage follows DVC's death on Linux only")
def test_a_stage_whose_dvc_died_before_it_started_ends_too(tmp_path: Path) -> None:
    if b"dvc" in Path("/proc/1/cmdline").read_bytes():
        pytest.skip("init is DVC here (a container): an orphan's new parent is DVC")
    (tmp_path / "stage.py").write_text(ORPHAN, encoding="utf-8")
    env = os.environ | {"DVC_STAGE": "train"}
    cmd = [sys.executable, "-c", QUICK_LAUNCHER, "/bin/bash", f"{sys.executable} stage.py"]
    launcher = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    # the launcher is gone at once, and the orphaned stage holds its output pipes: run() returns when the stage ends
    # (before the fix it watched init instead, and slept its 60 s into this call's timeout)
    assert launcher.returncode == 0
    assert (launcher.stdout, launcher.stderr) == ("", "terminated\n")  # ended before main, with its one line


def test_an_fft_longer_than_the_clip_is_refused_by_name(tmp_path: Path) -> None:
    _tiny_params(tmp_path, clip_seconds=0.1, train_hop_seconds=0.1, n_fft=4096)
    cmd = [sys.executable, str(ROOT / "stages/prepare.py"), "prepared"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("params.yaml: features.n_fft: got 4096; must be under twice the clip's 1600 samples")
    assert r.stderr.count("\n") == 1
