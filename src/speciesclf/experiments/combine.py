"""Ensembles across experiments: runs trained in different DVC experiments (a BirdNET head in one, a log-mel CNN in
another) averaged like the ``ensemble`` stage averages the runs of one, and the candidate chosen on validation.

The ``ensemble`` stage only sees the runs of its own experiment. This module takes *workspaces*, folders holding an
experiment's ``params.yaml``, ``models/`` and ``data/features*/`` (``make insectset32-combined`` checks them out
with git and DVC), and a run group in each::

    python -m speciesclf.experiments.combine --group log-mel=ws/insectset32:phase3 \\
        --group birdnet=ws/insectset32-birdnet:phase3 --out reports/insectset32-combined

The candidates are every run alone, each group's runs averaged, the averages of groups asked for with
``--average A+B`` (for example each log-mel seed triple with a PCEN triple), and all groups averaged. Each is scored
on the validation and the test split at recording level (members cutting other windows are averaged per recording,
as :func:`~speciesclf.evaluation.evaluate.evaluate_ensemble` does); the one with the best validation macro-F1 is
chosen, the rule the report applies to an ensemble and its members. Test is reported beside it, never looked at.
Several ``--average`` of one recipe (independent seeds) also get their mean ± spread: the recipe's expected score,
where the chosen candidate is the luckiest draw.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speciesclf.evaluation.evaluate import (
    Member,
    average_members,
    feature_store_of,
    same_species,
    score_probabilities,
    window_probabilities,
)
from speciesclf.evaluation.markdown import cell, head, mean_sd, row
from speciesclf.features.store import FeatureStore
from speciesclf.files import write_text
from speciesclf.models.saved import SavedModel, load_model
from speciesclf.params import load_params
from speciesclf.runs import GROUPS, runs_of

__all__ = [
    "Group",
    "candidates",
    "choose",
    "main",
    "parse_average",
    "parse_group",
    "probabilities",
    "render_markdown",
    "score",
    "spread",
]

STORES = ("data/features", "data/features_phase3")  # where dvc.yaml puts an experiment's feature stores
SPLITS = ("val", "test")  # validation first: the split the choice is made on


@dataclass(frozen=True)
class Group:
    """Runs of one experiment: a name for the table, the workspace, and the members (each on its store)."""

    name: str
    workspace: Path
    members: tuple[Member, ...]


def parse_group(spec: str) -> Group:
    """``NAME=WORKSPACE:GROUP`` → the runs of GROUP (``phase3`` = each seed in that workspace's params.yaml)."""
    name, sep, rest = spec.partition("=")
    workspace, sep2, group = rest.rpartition(":")
    if not (sep and sep2 and name and workspace):
        raise ValueError(f"--group {spec}: expected NAME=WORKSPACE:GROUP, e.g. birdnet=ws/insectset32-birdnet:phase3")
    if group not in GROUPS:
        raise ValueError(f"--group {spec}: run group {group!r} is not one of {', '.join(GROUPS)}")
    ws = Path(workspace)
    if not (ws / "params.yaml").is_file():
        raise ValueError(f"--group {spec}: {ws} is not an experiment's workspace (no params.yaml)")
    stores = [ws / s for s in STORES if FeatureStore(ws / s).exists()]
    members = []
    for run in runs_of(group, load_params(ws / "params.yaml")):
        model_dir = ws / "models" / run
        if not (model_dir / "model.json").is_file():
            raise ValueError(f"--group {spec}: {model_dir} holds no trained model (check the experiment out first)")
        members.append(Member(f"{name} {run}", model_dir, feature_store_of(model_dir, stores)))
    return Group(name, ws, tuple(members))


def _distinct(groups: list[Group]) -> list[Group]:
    """Refuse a name or a model given twice: it would replace a row, or weigh one run double in an average."""
    seen: dict[Any, str] = {}
    for g in groups:
        for key in (g.name, *(m.model_dir.resolve() for m in g.members)):
            if key in seen:
                raise ValueError(f"--group {g.name}: {key} is already in --group {seen[key]}")
            seen[key] = g.name
    return groups


def parse_average(spec: str, groups: list[Group]) -> tuple[Group, ...]:
    """``A+B[+...]`` → those groups (by name), to be averaged as one candidate."""
    by_name = {g.name: g for g in groups}
    names = spec.split("+")
    if len(names) < 2 or len(set(names)) < len(names):
        raise ValueError(f"--average {spec}: expected two or more different group names joined by +, e.g. a+b")
    for name in names:
        if name not in by_name:
            raise ValueError(f"--average {spec}: no --group named {name!r} (groups: {', '.join(by_name)})")
    return tuple(by_name[n] for n in names)


def _average(groups: tuple[Group, ...] | list[Group]) -> tuple[str, tuple[Member, ...]]:
    return " + ".join(g.name for g in groups), tuple(m for g in groups for m in g.members)


def candidates(groups: list[Group], averages: list[tuple[Group, ...]] = ()) -> dict[str, tuple[Member, ...]]:
    """Each run alone, each group of several runs averaged, the ``averages`` asked for, then all groups averaged
    (when there are several)."""
    out = {m.run: (m,) for g in groups for m in g.members}
    out |= {f"{g.name} (mean of {len(g.members)})": g.members for g in groups if len(g.members) > 1}
    out |= dict(_average(a) for a in averages)
    if len(groups) > 1:
        out.setdefault(*_average(groups))
    return out


def probabilities(groups: list[Group]) -> dict[tuple[Path, str], tuple[SavedModel, Any]]:
    """(run's model folder, split) → the model and its window probabilities: computed once per run, since each run
    is in several candidates."""
    out = {}
    for member in (m for g in groups for m in g.members):
        model = load_model(member.model_dir)
        for split in SPLITS:
            try:
                out[member.model_dir, split] = model, window_probabilities(model, member.features_dir, split)
            except ValueError as exc:  # a store made for other species
                raise ValueError(f"{member.model_dir}: {exc}") from None
    return out


def score(
    members: tuple[Member, ...], rare_threshold: int, scored: dict[tuple[Path, str], tuple[SavedModel, Any]]
) -> dict[str, Any]:
    """Split → recording-level scores (and how members were averaged) of one candidate, from its members'
    :func:`probabilities`: as :func:`~speciesclf.evaluation.evaluate.evaluate_ensemble` scores them."""
    same_species(members, [scored[m.model_dir, SPLITS[0]][0] for m in members])
    out = {}
    for split in SPLITS:
        model = scored[members[0].model_dir, split][0]
        windows = [scored[m.model_dir, split][1] for m in members]
        mean, level = average_members(members, windows, split) if len(members) > 1 else (windows[0], "-")
        recording = score_probabilities(mean, model.species, model.card["train_counts"], rare_threshold)["recording"]
        keys = ("accuracy", "f1_macro", "f1_rare", "n_recordings")
        out[split] = {**{k: recording[k] for k in keys}, "averaged": level}
    return out


def choose(scored: dict[str, dict[str, Any]]) -> str:
    """The candidate with the best validation macro-F1 (recording level); the first listed on a tie."""
    return max(scored, key=lambda c: scored[c]["val"]["f1_macro"])


def spread(scored: dict[str, dict[str, Any]], names: list[str]) -> dict[str, dict[str, float]]:
    """Split → mean and sample sd of accuracy and macro-F1 over the candidates ``names`` (two or more)."""
    out: dict[str, dict[str, float]] = {split: {} for split in SPLITS}
    for split in SPLITS:
        for key in ("accuracy", "f1_macro"):
            values = [scored[n][split][key] for n in names]
            out[split] |= {key: statistics.mean(values), f"{key}_sd": statistics.stdev(values)}
    return out


def render_markdown(summary: dict[str, Any], title: str, preamble: str) -> str:
    cols = ("val accuracy", "val macro-F1", "test accuracy", "test macro-F1", "test rare F1")
    out = [f"# {title}", "", preamble, "", *head(["candidate", "members", *cols])]
    for name, candidate in summary["candidates"].items():
        val, test = candidate["scores"]["val"], candidate["scores"]["test"]
        cells = (val["accuracy"], val["f1_macro"], test["accuracy"], test["f1_macro"], test["f1_rare"])
        label = f"**{name}**" if name == summary["chosen_on_validation"] else name
        out.append(
            row([label, len(candidate["members"]), *map(cell, cells)])
        )  # rare F1 is None when no species is rare
    chosen = summary["chosen_on_validation"]
    test = summary["candidates"][chosen]["scores"]["test"]
    out += ["", f"Chosen on validation macro-F1 (recording level): **{chosen}**; on test it scores accuracy "]
    out[-1] += f"{test['accuracy']:.3f}, macro-F1 {test['f1_macro']:.3f} ({test['n_recordings']} recordings)."
    if "averages" in summary:
        names, s = summary["averages"]["candidates"], summary["averages"]["scores"]
        scores = "; ".join(
            f"{split} accuracy {mean_sd(s[split]['accuracy'], s[split]['accuracy_sd'])}, "
            f"macro-F1 {mean_sd(s[split]['f1_macro'], s[split]['f1_macro_sd'])}"
            for split in SPLITS
        )
        out += ["", f"Over the {len(names)} averages asked for ({', '.join(names)}), mean ± sample sd: {scores}."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None, prog: str = "python -m speciesclf.experiments.combine") -> int:
    """Score runs of several experiments alone and averaged; write <out>.json and <out>.md (whole)."""
    parser = argparse.ArgumentParser(prog=prog, description=main.__doc__)
    parser.add_argument("--group", action="append", required=True, help="NAME=WORKSPACE:GROUP, once per experiment")
    parser.add_argument("--average", action="append", default=[], help="A+B: also average these groups' runs")
    parser.add_argument("--out", required=True, help="output path without suffix: writes .json and .md")
    parser.add_argument("--title", default="Ensembles across experiments")
    parser.add_argument("--preamble", default="Recording level; chosen on validation macro-F1, test beside it.")
    args = parser.parse_args(argv)
    try:
        groups = _distinct([parse_group(spec) for spec in args.group])
        averages = [parse_average(spec, groups) for spec in args.average]
        rare = load_params(groups[0].workspace / "params.yaml")["evaluate"]["rare_threshold"]
        runs = probabilities(groups)
        scored = {name: (ms, score(ms, rare, runs)) for name, ms in candidates(groups, averages).items()}
    except (ValueError, OSError) as exc:  # EnsembleError and ParamsError among them: one line, no traceback
        where = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.filename else exc
        parser.exit(2, f"{prog}: error: {where}\n")
    table = {name: {"members": [m.run for m in ms], "scores": s} for name, (ms, s) in scored.items()}
    chosen = choose({name: row["scores"] for name, row in table.items()})
    summary = {"candidates": table, "chosen_on_validation": chosen, "rare_threshold": rare}
    if len(averages) > 1:
        names = [_average(a)[0] for a in averages]
        summary["averages"] = {"candidates": names, "scores": spread({n: table[n]["scores"] for n in names}, names)}
    write_text(args.out + ".json", json.dumps(summary, indent=2) + "\n")
    write_text(args.out + ".md", render_markdown(summary, args.title, args.preamble))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
