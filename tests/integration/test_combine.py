"""Ensembles across experiments: two workspaces laid out as DVC leaves an experiment (params.yaml, models/phase3/,
data/features_phase3/), each with tiny models trained here on real audio files, combined by the real CLI."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from speciesclf.data.prepare import prepare
from speciesclf.evaluation.evaluate import evaluate_ensemble
from speciesclf.experiments.combine import candidates, main, parse_group
from speciesclf.features.config import FeatureConfig
from speciesclf.features.store import featurize
from speciesclf.models.saved import save_model
from speciesclf.params import validate
from speciesclf.training.config import TrainConfig
from speciesclf.training.run import train_model

ROOT = Path(__file__).resolve().parents[2]
SR = 16000
FREQS = {"cricket": 500.0, "katydid": 1500.0, "cicada": 3000.0}
RECORDINGS = {"cricket": 8, "katydid": 5, "cicada": 4}


def _record(folder: Path) -> None:
    rng = np.random.default_rng(1)
    for label, freq in FREQS.items():
        (folder / label).mkdir(parents=True)
        for r in range(RECORDINGS[label]):
            t = np.arange(2 * SR) / SR
            wave = 0.3 * np.sin(2 * np.pi * freq * (1 + 0.04 * r) * t) + 0.1 * rng.standard_normal(t.size)
            sf.write(folder / label / f"r{r}.wav", wave.astype(np.float32), SR)


def _workspace(ws: Path, params: dict, front_end: str, clip: float, seeds: list[int]) -> None:
    """An experiment's workspace: its params.yaml, Phase 3's feature store and one model per seed."""
    params = copy.deepcopy(params)
    params["phase3"].update(seeds=seeds, features={"front_end": front_end, "clip_seconds": clip})
    (ws / "params.yaml").parent.mkdir(parents=True)
    (ws / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    feats = FeatureConfig(sample_rate=SR, clip_seconds=clip, train_hop_seconds=0.5, n_mels=32, front_end=front_end)
    featurize(ws.parent / "prepared" / "manifest.csv", ws / "data/features_phase3", feats, workers=1)
    for seed in seeds:
        config = TrainConfig(epochs=2, warmup_epochs=0, device="cpu", precision="fp32", seed=seed)
        trained = train_model(ws / "data/features_phase3", "AudioCNN", None, config, log=None)
        save_model(ws / f"models/phase3/seed_{seed}", trained.network, trained.card)


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("combine")
    _record(base / "recordings")
    params = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")))
    params["data"].update({"source": "folder", "path": str(base / "recordings")})
    params["features"].update(sample_rate=SR, clip_seconds=1.0, train_hop_seconds=0.5)
    params["evaluate"]["rare_threshold"] = 3
    prepare(validate(params), base / "prepared")
    _workspace(base / "logmel", params, "logmel", 1.0, [1, 2])
    _workspace(base / "mfcc", params, "mfcc", 0.5, [3, 4])  # other windows: averaged per recording
    return base / "logmel", base / "mfcc"


def test_candidates_are_each_run_each_experiment_and_all_chosen_on_validation(
    workspaces: tuple[Path, Path], tmp_path: Path
) -> None:
    logmel, mfcc = workspaces
    out = tmp_path / "combined"
    assert main(["--group", f"a={logmel}:phase3", "--group", f"b={mfcc}:phase3", "--out", str(out)]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    table = summary["candidates"]
    runs = ["a phase3/seed_1", "a phase3/seed_2", "b phase3/seed_3", "b phase3/seed_4"]
    assert list(table) == [*runs, "a (mean of 2)", "b (mean of 2)", "a + b"]
    assert table["a + b"]["members"] == runs and table["b (mean of 2)"]["members"] == runs[2:]
    members = [m for g in (parse_group(f"a={logmel}:phase3"), parse_group(f"b={mfcc}:phase3")) for m in g.members]
    for split in ("val", "test"):
        expected = evaluate_ensemble(members, 3, split)
        assert table["a + b"]["scores"][split]["f1_macro"] == pytest.approx(expected["recording"]["f1_macro"])
        assert table["a + b"]["scores"][split]["averaged"] == "recording"  # 1 s and 0.5 s windows
    assert table["a (mean of 2)"]["scores"]["test"]["averaged"] == "window"
    best_val = max(row["scores"]["val"]["f1_macro"] for row in table.values())
    chosen = summary["chosen_on_validation"]
    assert table[chosen]["scores"]["val"]["f1_macro"] == best_val
    assert f"| **{chosen}** |" in out.with_suffix(".md").read_text()


def test_groups_read_the_seeds_of_their_own_params(workspaces: tuple[Path, Path]) -> None:
    logmel, mfcc = workspaces
    group = parse_group(f"x={mfcc}:phase3")
    assert [m.model_dir for m in group.members] == [mfcc / "models/phase3/seed_3", mfcc / "models/phase3/seed_4"]
    assert all(m.features_dir == mfcc / "data/features_phase3" for m in group.members)
    one = candidates([parse_group(f"x={logmel}:phase3")])
    assert list(one) == ["x phase3/seed_1", "x phase3/seed_2", "x (mean of 2)"]  # no "all": one experiment


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{ws}:phase3", "expected NAME=WORKSPACE:GROUP"),
        ("a={ws}:phase9", "run group 'phase9' is not one of baseline, phase1"),
        ("a={ws}/nowhere:phase3", "nowhere is not an experiment's workspace (no params.yaml)"),
        ("a={ws}:phase2b", "models/phase2b holds no trained model (check the experiment out first)"),
    ],
)
def test_a_bad_group_is_one_line_naming_it(workspaces: tuple[Path, Path], spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_group(spec.format(ws=workspaces[0]))


def test_the_cli_refuses_a_run_given_twice_in_one_line(workspaces: tuple[Path, Path], tmp_path: Path) -> None:
    logmel = workspaces[0]
    cmd = [sys.executable, "-m", "speciesclf.experiments.combine", "--out", str(tmp_path / "x")]
    cmd += ["--group", f"a={logmel}:phase3", "--group", f"b={logmel}:phase3"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--group b:" in lines[0] and "seed_1 is already in --group a" in lines[0]
    assert not (tmp_path / "x.json").exists()


@pytest.fixture(scope="module")
def four(workspaces: tuple[Path, Path]) -> list[Path]:
    """Two more experiments beside ``workspaces``: each front end again, at another seed."""
    logmel, mfcc = workspaces
    params = yaml.safe_load((logmel / "params.yaml").read_text(encoding="utf-8"))
    _workspace(logmel.parent / "logmel2", params, "logmel", 1.0, [5])
    _workspace(logmel.parent / "mfcc2", params, "mfcc", 0.5, [6])
    return [logmel, mfcc, logmel.parent / "logmel2", logmel.parent / "mfcc2"]


def test_averages_asked_for_are_candidates_with_their_spread(four: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "combined"
    argv = [arg for name, ws in zip("abcd", four, strict=True) for arg in ("--group", f"{name}={ws}:phase3")]
    assert main([*argv, "--average", "a+b", "--average", "c+d", "--out", str(out)]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    table = summary["candidates"]
    assert list(table)[-3:] == ["a + b", "c + d", "a + b + c + d"]
    assert table["c + d"]["members"] == ["c phase3/seed_5", "d phase3/seed_6"]
    members = [*parse_group(f"c={four[2]}:phase3").members, *parse_group(f"d={four[3]}:phase3").members]
    expected = evaluate_ensemble(members, 3, "val")["recording"]
    assert table["c + d"]["scores"]["val"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert summary["averages"]["candidates"] == ["a + b", "c + d"]
    for split in ("val", "test"):
        pair = [table[n]["scores"][split]["f1_macro"] for n in ("a + b", "c + d")]
        got = summary["averages"]["scores"][split]
        assert got["f1_macro"] == pytest.approx(sum(pair) / 2)
        assert got["f1_macro_sd"] == pytest.approx(abs(pair[0] - pair[1]) / 2**0.5)
    text = out.with_suffix(".md").read_text()
    assert "Over the 2 averages asked for (a + b, c + d), mean ± sample sd: val accuracy" in text


@pytest.mark.parametrize(
    ("average", "message"),
    [
        ("a", "--average a: expected two or more different group names joined by +, e.g. a+b"),
        ("a+a", "--average a+a: expected two or more different group names joined by +, e.g. a+b"),
        ("a+z", "--average a+z: no --group named 'z' (groups: a, b)"),
    ],
)
def test_a_bad_average_is_one_line_naming_it(
    workspaces: tuple[Path, Path], tmp_path: Path, average: str, message: str
) -> None:
    logmel, mfcc = workspaces
    cmd = [sys.executable, "-m", "speciesclf.experiments.combine", "--out", str(tmp_path / "x"), "--average", average]
    cmd += ["--group", f"a={logmel}:phase3", "--group", f"b={mfcc}:phase3"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [f"python -m {cmd[2]}: error: {message}"]
    assert not (tmp_path / "x.json").exists()
