"""dvc.yaml declares what each stage really runs: its script and the script's import closure in src/.

A code file a stage imports but does not declare leaves stale results that DVC calls up to date; a declared file
it does not import re-runs the stage for nothing. The closure is derived statically (the standard library's
modulefinder, which reads every import in a module, also those inside functions), so a new import shows up here
before anyone runs the pipeline.
"""

from __future__ import annotations

import json
import modulefinder
import os
import re
from pathlib import Path

import pytest
import yaml

from dvcrepo import commit, copy_project, sh

ROOT = Path(__file__).resolve().parents[2]


def import_closure(script: Path, root: Path = ROOT) -> set[str]:
    """The project's source files ``script`` imports, directly or not: paths relative to ``root``."""
    finder = modulefinder.ModuleFinder(path=[str(root / "src")])  # only the project's modules are looked up
    finder.run_script(str(script))
    return {
        Path(module.__file__).relative_to(root).as_posix()
        for name, module in finder.modules.items()
        if name.split(".")[0] == "speciesclf" and module.__file__
    }


def stage_code(dvc_yaml: Path, root: Path = ROOT) -> dict[str, tuple[str, set[str]]]:
    """Stage → (its script, the code files it declares as deps), as paths relative to ``root`` (a study's
    dvc.yaml runs in its own folder and names the project's code from there)."""
    stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    here = dvc_yaml.parent.relative_to(root)
    out = {}
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # foreach stages keep their definition under `do`
        script = re.search(r"\bstages/\w+\.py\b", stage["cmd"])
        assert script, f"{name}: its command runs no script of stages/"
        code = {os.path.normpath(here / d) for d in stage["deps"] if d.endswith(".py")}
        out[name] = (script.group(0), {Path(c).as_posix() for c in code})
    return out


def pipelines(root: Path = ROOT) -> list[Path]:
    """The project's dvc.yaml and every study's."""
    return [root / "dvc.yaml", *sorted(root.glob("studies/*/dvc.yaml"))]


def undeclared(root: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    """Per stage (``file:stage`` for a study's), the code it imports but does not declare (``missing``) and declares
    but does not import."""
    problems = {}
    for dvc_yaml in pipelines(root):
        prefix = "" if dvc_yaml.parent == root else f"{dvc_yaml.relative_to(root).as_posix()}:"
        for name, (script, declared) in stage_code(dvc_yaml, root).items():
            needed = {script} | import_closure(root / script, root)
            missing, extra = sorted(needed - declared), sorted(declared - needed)
            if missing or extra:
                problems[prefix + name] = {"missing": missing, "extra": extra}
    return problems


def test_every_stage_declares_its_import_closure() -> None:
    assert len(pipelines()) > 1  # the studies' pipelines are checked too
    assert undeclared() == {}


def test_the_closure_follows_imports_inside_functions() -> None:
    # prepare imports the synthetic generator only when the source is synthetic
    closure = import_closure(ROOT / "stages/prepare.py")
    assert "src/speciesclf/data/synth.py" in closure
    assert "src/speciesclf/models/cnn.py" not in closure  # validating params does not pull in the models


def test_a_missing_and_an_extra_dependency_are_both_reported(tmp_path: Path) -> None:
    for name in ("stages", "src"):
        (tmp_path / name).symlink_to(ROOT / name)
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    deps = spec["stages"]["report"]["deps"]
    deps.remove("src/speciesclf/evaluation/metrics.py")
    deps.append("src/speciesclf/predict.py")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert undeclared(tmp_path) == {
        "report": {"missing": ["src/speciesclf/evaluation/metrics.py"], "extra": ["src/speciesclf/predict.py"]}
    }


@pytest.mark.parametrize("module", ["speciesclf.predict", "speciesclf.predictor"])
def test_prediction_does_not_import_the_training_code(module: str) -> None:
    finder = modulefinder.ModuleFinder(path=[str(ROOT / "src")])
    finder.import_hook(module)
    loaded = {name for name in finder.modules if name.startswith("speciesclf")}
    assert not {n for n in loaded if n.startswith(("speciesclf.training", "speciesclf.evaluation"))}
    assert "speciesclf.models.losses" not in loaded


def test_dvc_takes_true_for_a_locked_1_as_docs_configuration_says(tmp_path: Path) -> None:
    """The one boolean no stage of ours sees (docs/configuration.md): DVC compares params with ``==``."""
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "dvc", "init", "-q")
    (tmp_path / "params.yaml").write_text("train: {epochs: 1, lr: 0.5}\n")
    stage = {"cmd": "python -c \"print('ran')\" > out.txt", "params": ["train"], "outs": ["out.txt"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": stage}}))
    sh(tmp_path, "dvc", "repro", "-q")
    for value, changed in (("true", False), ("2", True), ("false", True)):
        (tmp_path / "params.yaml").write_text(f"train: {{epochs: {value}, lr: 0.5}}\n")
        status = sh(tmp_path, "dvc", "status", "--json").stdout
        assert bool(json.loads(status)) == changed, (value, status)


@pytest.mark.parametrize(("key", "value", "number"), [("train.epochs", "true", 1), ("train.warmup_epochs", "false", 0)])
def test_check_params_refuses_a_boolean_that_dvc_takes_for_the_locked_number(
    tmp_path: Path, key: str, value: str, number: int
) -> None:
    """The project's own `check_params` stage, under the very command of the case: `dvc exp run -S`."""
    repo = copy_project(tmp_path / "repo")
    section, name = key.split(".")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][name] = number
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, "dvc", "repro", "-q", "check_params")
    commit(repo, "locked")
    assert json.loads(sh(repo, "dvc", "status", "--json", "check_params").stdout) == {}

    r = sh(repo, "dvc", "exp", "run", "-S", f"{key}={value}", "check_params", check=False)
    assert r.returncode != 0, r.stdout
    errors = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("params.yaml:")]
    assert len(errors) == 1 and key in errors[0] and value.title() in errors[0], r.stdout + r.stderr
    # the value in the file, however it got there, makes the stage stale: nothing calls it current
    params[section][name] = value == "true"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "check_params" in json.loads(sh(repo, "dvc", "status", "--json").stdout)
