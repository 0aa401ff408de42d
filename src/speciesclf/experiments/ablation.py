"""Phase 3's ablation: a recipe and its variants (an ingredient taken out or added), each trained at several seeds
as a DVC experiment, read back from the experiments' git refs and tabled.

Each variant is the experiment ``<prefix><variant>`` (``make insectset32-ablation`` queues them). Its params are
compared with the first variant's (the recipe), so the table says what each one changed, read from the
experiment itself rather than from the command that queued it. Per seed, the validation score is the window-level
macro-F1 of the epoch early stopping kept (what the recipe is chosen on); the test scores are reported beside it,
never used to choose. Mean and sample standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

import yaml

from speciesclf.evaluation.markdown import MISSING, cell, head, mean_sd, row
from speciesclf.files import write_text
from speciesclf.runs import PHASE3

__all__ = ["collect", "main", "params_changed", "render_markdown", "summarise"]

# (label, where in metrics/phase3/seed_<s>.json): validation first, the one the recipe is chosen on
SCORES = (
    ("val macro-F1", ("best_val_f1_macro",)),
    ("test accuracy", ("recording", "accuracy")),
    ("test macro-F1", ("recording", "f1_macro")),
    ("test rare F1", ("recording", "f1_rare")),
    ("test window macro-F1", ("f1_macro",)),
)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def _experiment_ref(repo: Path, name: str) -> str:
    refs = [r for r in _git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").split() if r.endswith("/" + name)]
    if not refs:
        raise SystemExit(f"experiment {name!r}: not found in refs/exps (expected it queued and run by dvc exp run)")
    return refs[0]


def collect(repo: Path, prefix: str, variants: list[str]) -> dict[str, Any]:
    """variant → its params.yaml and, per Phase 3 seed, the metrics of ``metrics/phase3/seed_<s>.json``."""
    out: dict[str, Any] = {}
    for variant in variants:
        ref = _experiment_ref(repo, prefix + variant)
        params = yaml.safe_load(_git(repo, "show", f"{ref}:params.yaml"))
        seeds = params[PHASE3]["seeds"]
        runs = {str(s): json.loads(_git(repo, "show", f"{ref}:metrics/{PHASE3}/seed_{s}.json")) for s in seeds}
        out[variant] = {"params": params, "seeds": runs}
    return out


def _flatten(tree: dict[str, Any], parent: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{parent}{key}."))
        else:
            flat[f"{parent}{key}"] = value
    return flat


def params_changed(recipe: dict[str, Any], variant: dict[str, Any]) -> dict[str, Any]:
    """The keys whose value differs from the recipe's (dotted, as ``-S`` spells them), with the variant's value."""
    a, b = _flatten(recipe), _flatten(variant)
    return {k: b.get(k) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def _score(run: dict[str, Any], path: tuple[str, ...]) -> float | None:
    for key in path:
        run = run.get(key) if isinstance(run, dict) else None
    return run


def summarise(collected: dict[str, Any]) -> dict[str, Any]:
    """Per variant: what it changed, each score per seed and its mean and sample sd; the best on validation."""
    recipe = next(iter(collected.values()))["params"]
    rows: dict[str, Any] = {}
    for variant, found in collected.items():
        scores = {}
        for label, path in SCORES:
            values = {seed: _score(run, path) for seed, run in found["seeds"].items()}
            present = [v for v in values.values() if v is not None]
            sd = statistics.stdev(present) if len(present) > 1 else 0.0
            mean = statistics.fmean(present) if present else None
            scores[label] = {"per_seed": values, "mean": mean, "std": sd if present else None}
        rows[variant] = {"changes": params_changed(recipe, found["params"]), "scores": scores}
    best = max(rows, key=lambda v: rows[v]["scores"][SCORES[0][0]]["mean"] or 0.0)
    return {"variants": rows, "chosen_on_validation": best}


def _cell(s: dict[str, Any], recipe: dict[str, Any], with_delta: bool) -> str:
    """mean ± sd, and the difference of the means from the recipe's."""
    if s["mean"] is None:
        return MISSING
    delta = f" ({cell(s['mean'] - recipe['mean'], signed=True)})" if with_delta and recipe["mean"] is not None else ""
    return mean_sd(s["mean"], s["std"]) + delta


def render_markdown(summary: dict[str, Any], title: str, preamble: str) -> str:
    labels = [label for label, _ in SCORES]
    out = [f"# {title}", "", preamble, ""]
    out += head(["variant", "changes against the recipe", *labels])
    recipe = next(iter(summary["variants"]))
    for variant, scored in summary["variants"].items():
        changes = ", ".join(f"`{k}={v}`" for k, v in scored["changes"].items()) or "(the recipe)"
        cells = [
            _cell(scored["scores"][label], summary["variants"][recipe]["scores"][label], variant != recipe)
            for label in labels
        ]
        name = f"**{variant}**" if variant == summary["chosen_on_validation"] else variant
        out.append(row([name, changes, *cells]))
    out += ["", f"Chosen on validation macro-F1: **{summary['chosen_on_validation']}**.", ""]
    out += ["Per seed (validation macro-F1 / test recording accuracy / test recording macro-F1):", ""]
    for variant, scored in summary["variants"].items():
        per = [scored["scores"][label]["per_seed"] for label in labels[:3]]
        seeds = ", ".join(f"{seed}: " + " / ".join(cell(p[seed]) for p in per) for seed in per[0])
        out.append(f"- {variant}: {seeds}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None, prog: str = "python -m speciesclf.experiments.ablation") -> int:
    """Table the experiments <prefix><variant> (the first variant is the recipe) as <out>.json and <out>.md."""
    parser = argparse.ArgumentParser(prog=prog, description=main.__doc__)
    parser.add_argument("variants", nargs="+", help="variant names, the recipe first")
    parser.add_argument("--prefix", default="ablation-", help="experiment names are <prefix><variant>")
    parser.add_argument("--repo", default=".", help="the git repository holding the experiments")
    parser.add_argument("--title", default="Phase 3 ablation")
    parser.add_argument("--preamble", default="")
    parser.add_argument("--out", required=True, help="output path without suffix: writes .json and .md (whole)")
    args = parser.parse_args(argv)
    summary = summarise(collect(Path(args.repo), args.prefix, args.variants))
    preamble = args.preamble.strip() or f"Experiments `{args.prefix}<variant>`; mean ± sample sd over seeds."
    write_text(args.out + ".json", json.dumps(summary, indent=2) + "\n")
    write_text(args.out + ".md", render_markdown(summary, args.title, preamble))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
