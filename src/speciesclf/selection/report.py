"""``select``'s metrics as a Markdown report: every candidate's cross-validated scores, the choice, test once."""

from __future__ import annotations

from typing import Any

from speciesclf.evaluation.markdown import head, mean_sd

__all__ = ["render_markdown"]


def render_markdown(metrics: dict[str, Any], title: str) -> str:
    """The report of one ``select`` run (its ``metrics/selected.json``), under the heading ``title``."""
    n = metrics["recordings"]
    lines = [
        f"# {title}",
        "",
        f"Written by the `select` stage from `{metrics['recipe']}`: {metrics['folds']}-fold cross-validation over "
        f"{n['cross_validated']} train + validation recordings (grouped by recording, stratified by species), "
        f"chosen by the mean of recording-level `{metrics['choose_by']}` over the folds, then trained on all of "
        f"them; test ({n['test']} recordings) scored once, after the choice.",
        "",
        *head(["candidate", "models", "CV accuracy", "CV macro-F1", "pooled out-of-fold accuracy", "pooled macro-F1"]),
    ]
    for name, c in metrics["candidates"].items():
        mark = " (chosen)" if name == metrics["chosen"] else ""
        lines.append(
            f"| {name}{mark} | {len(c['members'])} | {mean_sd(c['mean']['accuracy'], c['sd']['accuracy'])} "
            f"| {mean_sd(c['mean']['f1_macro'], c['sd']['f1_macro'])} "
            f"| {c['pooled']['accuracy']:.3f} | {c['pooled']['f1_macro']:.3f} |"
        )
    test = metrics["test"]
    lines += ["", f"Test, recording level: accuracy {test['accuracy']:.3f}, macro-F1 {test['f1_macro']:.3f}."]
    if "repeats" in metrics:
        lines += _repeats(metrics)
    if metrics.get("left_out"):
        lines += ["", "Left out: " + "; ".join(f"{k} ({v})" for k, v in metrics["left_out"].items()) + "."]
    return "\n".join(lines) + "\n"


def _repeats(metrics: dict[str, Any]) -> list[str]:
    """The selection repeated with other seeds: each repeat's choice and test, and their mean and spread."""
    rows = [
        "",
        "The whole selection repeated with other fold and model seeds (the model written is the first repeat's):",
        "",
        *head(["folds seed", "chosen", "CV macro-F1", "test accuracy", "test macro-F1"]),
    ]
    for r in metrics["repeats"]:
        rows.append(
            f"| {r['seed']} | {r['chosen']} | {r['cross_validated']['f1_macro']:.3f} "
            f"| {r['test']['accuracy']:.3f} | {r['test']['f1_macro']:.3f} |"
        )
    mean, sd = metrics["test_over_repeats"]["mean"], metrics["test_over_repeats"]["sd"]
    rows += [
        "",
        f"Test over the repeats, mean ± sd: accuracy {mean_sd(mean['accuracy'], sd['accuracy'])}, "
        f"macro-F1 {mean_sd(mean['f1_macro'], sd['f1_macro'])}.",
    ]
    return rows
