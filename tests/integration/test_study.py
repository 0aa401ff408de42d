"""`speciesclf study`: a study folder written from the template for a user's collection, its params read through
the project's, and one-line errors for what cannot be written."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_select import FREQS, RECIPE, SR, _tone

from dvcrepo import ROOT, commit, copy_project, env, ran_stages, sh
from speciesclf.params import load_params


def _checkout(tmp: Path) -> Path:
    """A stand-in checkout: the project's params.yaml and the study template."""
    tmp.mkdir(exist_ok=True)
    shutil.copy(ROOT / "params.yaml", tmp / "params.yaml")
    shutil.copytree(ROOT / "studies" / "template", tmp / "studies" / "template")
    return tmp


def _study(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "speciesclf", "study", *args]
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=60)


def test_a_folder_collection_becomes_a_study_that_reads_the_project_params(tmp_path: Path) -> None:
    project = _checkout(tmp_path / "project")
    (tmp_path / "frogs" / "hyla").mkdir(parents=True)
    r = _study(project, "studies/frogs", "--data", "../frogs")
    assert r.returncode == 0, r.stderr
    assert "dvc repro studies/frogs/dvc.yaml" in r.stdout
    study = project / "studies" / "frogs"
    params = yaml.safe_load((study / "params.yaml").read_text())
    assert params == {"defaults": ["../../params.yaml"], "data": {"source": "folder", "path": "../../../frogs"}}
    assert (study / "../../../frogs" / "hyla").resolve() == (tmp_path / "frogs" / "hyla").resolve()
    loaded, base = load_params(study / "params.yaml"), load_params(project / "params.yaml")
    assert loaded == {**base, "data": {**base["data"], "source": "folder", "path": "../../../frogs"}}
    assert (study / "recipe.yaml").read_bytes() == (ROOT / "studies/template/recipe.yaml").read_bytes()
    assert (study / "dvc.yaml").read_bytes() == (ROOT / "studies/template/dvc.yaml").read_bytes()


def test_a_csv_collection_at_another_depth_keeps_its_paths_right(tmp_path: Path) -> None:
    project = _checkout(tmp_path / "project")
    (tmp_path / "calls").mkdir()
    (tmp_path / "calls" / "labels.csv").write_text("path,label\n")
    r = _study(project, "studies/2026/bats", "--data", str(tmp_path / "calls"), "--csv", "labels.csv")
    assert r.returncode == 0, r.stderr
    study = project / "studies" / "2026" / "bats"
    params = yaml.safe_load((study / "params.yaml").read_text())
    assert params["defaults"] == ["../../../params.yaml"]
    assert params["data"] == {"source": "csv", "path": str(tmp_path / "calls"), "csv": "labels.csv"}  # absolute
    pipeline = (study / "dvc.yaml").read_text()
    assert "python ../../../stages/select_model.py" in pipeline and "\n      - ../../src/" not in pipeline


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["studies/x", "--data", "nowhere"], "nowhere: not found; expected a folder of recordings"),
        (["studies/x", "--data", ".", "--csv", "labels.csv"], ".: not found; expected a folder with the CSV"),
        (["studies/template", "--data", "."], "studies/template: exists and is not empty"),
        (["studies/x", "--data", ".", "--recipe", "mine.yaml"], "mine.yaml: recipe not found"),
    ],
)
def test_what_cannot_be_written_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    project = _checkout(tmp_path)
    r = _study(project, *args)
    assert r.returncode == 2 and r.stderr == f"error: {message}" + r.stderr.split(message, 1)[1]
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr
    assert not (project / "studies" / "x").exists()


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # the socket file stays after the socket closes


@pytest.mark.parametrize(
    ("make", "kind", "where"),
    [
        (_fifo, "a named pipe", "frog/call.wav"),
        (_fifo, "a named pipe", "deep/er/pipe"),  # not a sound file's name, at another depth
        (_socket, "a socket", "frog/sock"),
    ],
)
def test_a_pipe_or_socket_in_the_collection_is_named_before_dvc_could_hang_on_it(
    tmp_path: Path, make, kind: str, where: str
) -> None:
    project, data = _checkout(tmp_path / "p"), tmp_path / "rec"
    (data / "frog").mkdir(parents=True)
    (data / "frog" / "a.wav").write_bytes(b"RIFF")
    (data / "loop").symlink_to(data)  # a link back up the tree is walked once
    (data / where).parent.mkdir(parents=True, exist_ok=True)
    make(data / where)
    r = _study(project, "studies/x", "--data", str(data))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"error: {data / where}: {kind}, not a regular file; DVC would wait on it for ever")
    assert not (project / "studies" / "x").exists()


def test_a_study_outside_a_checkout_is_refused(tmp_path: Path) -> None:
    r = _study(tmp_path, "studies/x", "--data", ".")
    assert r.returncode == 2 and "not inside a speciesclf checkout" in r.stderr


@pytest.mark.slow
def test_the_written_study_runs_under_dvc(tmp_path: Path) -> None:
    repo = copy_project(tmp_path / "repo")
    shutil.copytree(ROOT / "studies" / "template", repo / "studies" / "template")
    for s, (label, freq) in enumerate(FREQS.items()):
        for r in range(6):
            _tone(tmp_path / "recordings" / label / f"{r}.wav", freq * (1 + 0.03 * r), 10 * s + r, 1.0 + 0.3 * r)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(RECIPE))
    r = _study(repo, "studies/tones", "--data", "../recordings", "--recipe", "../tiny.yaml")
    assert r.returncode == 0, r.stderr
    params = yaml.safe_load((repo / "studies/tones/params.yaml").read_text())
    params["features"] = {"sample_rate": SR, "clip_seconds": 1.0, "train_hop_seconds": 0.5}  # as a user would add
    (repo / "studies/tones/params.yaml").write_text(yaml.safe_dump(params))
    commit(repo, "a study")
    ran = ran_stages(sh(repo, "dvc", "repro", "studies/tones/dvc.yaml").stdout)
    assert ran == {f"studies/tones/dvc.yaml:{s}" for s in ("check_params", "prepare", "select")}
    assert "up to date" in sh(repo, "dvc", "status", "studies/tones/dvc.yaml").stdout
    metrics = json.loads((repo / "studies/tones/selected.json").read_text())
    assert metrics["recordings"] == {"cross_validated": 15, "test": 3}
    assert (repo / "studies/tones/models/selected/model.json").is_file()
    assert "studies/template" not in sh(repo, "dvc", "status").stdout  # the template itself is not a pipeline


def test_dvc_itself_waits_on_a_pipe_that_reaches_the_collection_later(tmp_path: Path) -> None:
    """What docs/real-recordings.md says is left: a pipe that appears after the study was made (or a params.yaml
    edited by hand) is read by DVC before any stage of ours runs, and `dvc status` waits with no output. Should a
    DVC release stop waiting, this fails, and the docs and the study's check can change."""
    repo, data = copy_project(tmp_path / "repo"), tmp_path / "rec"
    (data / "frog").mkdir(parents=True)
    _tone(data / "frog" / "a.wav", FREQS["cricket"], 0, 2.0)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(source="folder", path=str(data))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, "dvc", "status", "prepare")  # the control: without the pipe it answers
    os.mkfifo(data / "frog" / "b.wav")
    status = subprocess.Popen(
        ["dvc", "status", "prepare"], cwd=repo, env=env(), start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            status.wait(timeout=15)
    finally:
        os.killpg(status.pid, 9)
        status.wait()
    assert status.stdout.read() == ""  # silent all along
