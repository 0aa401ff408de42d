"""Beyond one machine, for real and tiny: a DVC remote round trip, a two-worker experiment queue, and data-parallel
training under torchrun (2 gloo processes) — each on a copy of the project in a temporary git repository.

Marked `scale` (`pytest -m scale`); `make test` and CI run them. About four minutes on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from test_pipeline import METRIC_KEYS, tiny_params

from dvcrepo import ROOT, commit, copy_project, env, ran_stages, sh

pytestmark = pytest.mark.scale

# the baseline's training command as dvc.yaml gives it, less `python`: the script and its paths
BASELINE_CMD = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train_baseline"]["cmd"].split()[1:]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study, run and committed; one thread per training, as for queue workers on two cores."""
    repo = copy_project(tmp_path_factory.mktemp("scale") / "project")
    params = tiny_params(yaml.safe_load((repo / "params.yaml").read_text()))
    params["train"]["threads"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(repo, "project")
    sh(repo, "dvc", "repro")
    commit(repo, "run")
    return repo


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_remote_round_trip_to_a_fresh_clone(project: Path, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    sh(project, "dvc", "remote", "add", "-d", "shared", str(storage))
    commit(project, "shared remote")
    sh(project, "dvc", "push")
    assert any(storage.rglob("*")), "dvc push sent nothing"

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / "models").exists()  # git carries the code, dvc.lock and metrics; the remote the data
    sh(clone, "dvc", "pull")
    assert "Data and pipelines are up to date" in sh(clone, "dvc", "status").stdout
    assert ran_stages(sh(clone, "dvc", "repro").stdout) == set()
    for out in ("models/phase2b/model.pt", "data/features/features.json"):
        assert _md5(clone / out) == _md5(project / out), out


def _queue_status(repo: Path) -> dict[str, str]:
    """Experiment name → status, from `dvc queue status`."""
    status = {}
    for line in sh(repo, "dvc", "queue", "status").stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[-1] in {"Queued", "Running", "Success", "Failed"}:
            status[parts[1]] = parts[-1]
    return status


def _lock_outs(lock_text: str, stage: str) -> list[str]:
    return [o["md5"] for o in yaml.safe_load(lock_text)["stages"][stage]["outs"]]


def test_two_worker_queue_matches_runs_done_one_by_one(project: Path) -> None:
    gammas = ["0.5", "1"]
    queued = sh(
        project, "dvc", "exp", "run", "--queue", "-S", f"loss.gamma={','.join(gammas)}", "-S", "train.threads=1"
    )
    assert queued.stdout.count("Queued experiment") == 2, queued.stdout
    # the workers are daemons that inherit the caller's stdout: a pipe would stay open until they exit
    log = project / ".dvc" / "tmp" / "queue-start.log"
    with log.open("w") as out:
        subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=project, env=env(), stdout=out, stderr=out, check=True)
    assert "Started '2' new experiments task queue workers" in log.read_text()
    most_running, deadline = 0, time.monotonic() + 900
    while time.monotonic() < deadline:
        status = _queue_status(project)
        most_running = max(most_running, sum(s == "Running" for s in status.values()))
        if status and all(s in {"Success", "Failed"} for s in status.values()):
            break
        time.sleep(2)
    assert sorted(status.values()) == ["Success", "Success"], sh(project, "dvc", "queue", "status").stdout
    assert most_running == 2, "the two experiments never ran at the same time"

    # each queued run against the same run done alone in the workspace; -f skips DVC's run cache, which would
    # otherwise hand back the queued run's outputs instead of training again
    exps = json.loads(sh(project, "dvc", "exp", "show", "--json").stdout)
    by_gamma = {}
    for exp in next(row for row in exps if row["rev"] != "workspace")["experiments"]:
        data = exp["revs"][0]["data"]
        by_gamma[str(data["params"]["params.yaml"]["data"]["loss"]["gamma"])] = data["rev"]
    assert sorted(by_gamma) == gammas
    for gamma in gammas:
        sh(
            project,
            "dvc",
            "exp",
            "run",
            "-f",
            "-s",
            "-S",
            f"loss.gamma={gamma}",
            "-S",
            "train.threads=1",
            "train_phase2a",
            "train_phase2b",
        )
        queued_lock = sh(project, "git", "show", f"{by_gamma[gamma]}:dvc.lock").stdout
        alone_lock = (project / "dvc.lock").read_text()
        for stage in ("train_phase2a", "train_phase2b"):
            assert _lock_outs(queued_lock, stage) == _lock_outs(alone_lock, stage), (gamma, stage)
    ranked = sh(project, "dvc", "exp", "show", "--csv", "--sort-by", "metrics/phase2a.json:f1_macro").stdout
    assert "loss.gamma" in ranked.splitlines()[0]
    sh(project, "git", "checkout", "-q", "--", ".")
    sh(project, "dvc", "checkout", "-q")


def test_ddp_training_under_torchrun_has_the_single_process_schema(project: Path) -> None:
    single_model = json.loads((project / "models/baseline/model.json").read_text())
    single_metrics = json.loads((project / "metrics/baseline.json").read_text())
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(epochs=4, warmup_epochs=1, patience=4)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    # the environment switch: launched by torchrun, the stage trains with DDP whatever the params say
    direct = sh(project, "torchrun", "--standalone", "--nproc_per_node=2", *BASELINE_CMD)
    assert direct.stdout.count("train baseline: AudioCNN, loss cross_entropy, 2 processes (DDP)") == 1
    assert direct.stdout.count("epoch   1/4") == 1  # one log, from rank 0
    direct_bytes = (project / "models/baseline/model.pt").read_bytes()

    # the param switch, as DVC runs it: train.processes > 1 makes the stage start torchrun on itself
    params["train"]["processes"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    r = sh(project, "dvc", "repro", "train_baseline", "evaluate@baseline")
    assert ran_stages(r.stdout) == {"train_baseline", "evaluate@baseline"}
    assert "2 processes (DDP)" in r.stdout
    assert (project / "models/baseline/model.pt").read_bytes() == direct_bytes  # same run, either way

    model = json.loads((project / "models/baseline/model.json").read_text())
    assert set(model) == set(single_model) and model["world_size"] == 2 and single_model["world_size"] == 1
    losses = [h["train_loss"] for h in model["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    metrics = json.loads((project / "metrics/baseline.json").read_text())
    assert set(metrics) == set(single_metrics) >= METRIC_KEYS
    curves = (project / "metrics/train/baseline/plots/metrics/train_loss.tsv").read_text().splitlines()
    assert len(curves) == 1 + 4  # header + one row per epoch: only rank 0 logged
    assert "Data and pipelines are up to date" in sh(project, "dvc", "status", "evaluate@baseline").stdout
