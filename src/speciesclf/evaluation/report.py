"""The study's report: all models against the baseline, the γ-sensitivity table, Phase 3 over its seeds, the rarest
species, and the go/no-go verdict against the targets in ``params.report``."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speciesclf.evaluation.markdown import MISSING, cell, head, mean_sd, row
from speciesclf.evaluation.metrics import HEADLINE
from speciesclf.evaluation.stability import CONCENTRATED, FELL_BACK
from speciesclf.files import write_text
from speciesclf.runs import ENSEMBLE, PHASE3, PHASES, phase3_run, sweep_run

__all__ = ["build_summary", "render_markdown"]


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _verdict(models: dict[str, Any], targets: dict[str, float]) -> dict[str, Any]:
    """The study's success table, every row judged: a check is passed when its value is strictly above the target
    (the study wrote ">"), or for stability when the run did not collapse."""

    def check(run: str, key: str, threshold: float | None, target_run: str | None = None) -> dict[str, Any]:
        value = models.get(run, {}).get(key)
        passed = value is not None and threshold is not None and value > threshold
        target = {"target_run": target_run} if target_run else {}
        return {"run": run, "metric": key, "value": value, "target": threshold, **target, "pass": passed}

    def stable(run: str) -> dict[str, Any]:
        verdict = models.get(run, {}).get("stability")
        value = None if verdict is None else ", ".join(verdict["signs"]) or "no sign of collapse"
        passed = verdict is not None and not verdict["collapsed"]
        return {"run": run, "metric": "stability", "value": value, "target": "not collapsed", "pass": passed}

    phase2a = [
        check("phase2a", "accuracy", targets["phase2a_min_accuracy"]),
        check("phase2a", "f1_macro", targets["phase2a_min_f1_macro"]),
        check("phase2a", "f1_rare", targets["min_f1_rare"]),
        stable("phase2a"),
    ]
    phase2b = [
        check("phase2b", "f1_macro", targets["phase2b_min_f1_macro"]),
        check("phase2b", "f1_macro", models.get("phase2a", {}).get("f1_macro"), target_run="phase2a"),
        check("phase2b", "f1_rare", targets["min_f1_rare"]),
        stable("phase2b"),
    ]
    best = max(models, key=lambda r: models[r].get("f1_macro") or 0.0)
    stretch = [
        check(best, "accuracy", targets["stretch_min_accuracy"]),
        check(best, "f1_macro", targets["stretch_min_f1_macro"]),
        check(best, "f1_rare", targets["stretch_min_f1_rare"]),
        stable(best),
    ]
    phase1 = {"phase1": {"checks": [stable("phase1")]}} if "phase1" in models else {}  # the study's collapsed
    return {
        **phase1,
        "phase2a": {"go": all(c["pass"] for c in phase2a), "checks": phase2a},
        "phase2b": {"go": all(c["pass"] for c in phase2b), "checks": phase2b},
        "stretch": {"go": all(c["pass"] for c in stretch), "checks": stretch},
        "best_run": best,
        "collapsed": sorted(run for run, m in models.items() if m.get("stability", {}).get("collapsed")),
        "memory": _memory_checks(models, targets),
    }


def build_summary(
    metrics: dict[str, dict[str, Any]],
    per_class: dict[str, list[dict[str, Any]]],
    gammas: list[float],
    targets: dict[str, float],
    n_rarest: int = 10,
    seeds: Sequence[int] = (),
    default_gamma: float | None = None,
) -> dict[str, Any]:
    """``metrics``: run → metrics/<run>.json; ``per_class``: run → its per-species table; ``seeds``: Phase 3's;
    ``default_gamma``: ``loss.gamma``, which Phases 2A and 2B train with."""
    base = metrics["baseline"]
    deltas = {run: {k: _delta(m.get(k), base.get(k)) for k in HEADLINE} for run, m in metrics.items()}
    sweep = [
        {"gamma": g, "val_f1_macro": metrics[sweep_run(g)].get("best_val_f1_macro")}
        | {k: metrics[sweep_run(g)].get(k) for k in ("accuracy", "f1_macro", "f1_rare", "f1_common")}
        for g in gammas
        if sweep_run(g) in metrics
    ]
    f1 = {run: {x["species"]: x["f1"] for x in rows} for run, rows in per_class.items()}
    rarest_first = sorted(per_class["baseline"], key=lambda r: (r["train_count"], r["species"]))
    species = [
        {"species": r["species"], "train_count": r["train_count"], "support": r["support"]}
        | {run: f1[run][r["species"]] for run in per_class}
        for r in rarest_first
    ]
    return {
        "models": metrics,
        "delta_vs_baseline": deltas,
        "gamma_sweep": sweep,
        "best_gamma": _best_gamma(sweep, default_gamma),
        PHASE3: _over_seeds(metrics, seeds),
        "rarest_species": species[:n_rarest],
        "per_species_f1": species,  # every species, rarest first
        "verdict": _verdict(metrics, targets),
    }


def _best_gamma(sweep: list[dict[str, Any]], default_gamma: float | None) -> dict[str, Any] | None:
    """The sweep's γ with the best validation macro-F1 (the smaller γ on a tie), never chosen on test."""
    judged = [s for s in sweep if s["val_f1_macro"] is not None]
    if not judged:
        return None
    best = max(judged, key=lambda s: (s["val_f1_macro"], -s["gamma"]))
    differs = default_gamma is not None and best["gamma"] != default_gamma
    return {
        **best,
        "default_gamma": default_gamma,
        "differs": differs,
        "command": f"dvc exp run -S loss.gamma={best['gamma']}",
    }


_SEED_METRICS = ("accuracy", "f1_macro", "f1_rare")


def _over_seeds(metrics: dict[str, dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """Phase 3's recipe over its seeds: mean, sample standard deviation (0 for one seed), min and max of each
    headline score at window and recording level; a single test set gives one run's luck, several its spread."""
    trained = [s for s in seeds if phase3_run(s) in metrics]
    runs = [metrics[phase3_run(s)] for s in trained]

    def spread(scores: list[float | None]) -> dict[str, float] | None:
        values = [v for v in scores if v is not None]  # no rare species in the test split: no rare F1
        if not values:
            return None
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return {"mean": statistics.fmean(values), "std": sd, "min": min(values), "max": max(values)}

    out: dict[str, Any] = {"seeds": trained}
    if runs:
        out["window"] = {k: spread([r.get(k) for r in runs]) for k in _SEED_METRICS}
        out["recording"] = {k: spread([r["recording"].get(k) for r in runs]) for k in _SEED_METRICS}
    return out


def _run_order(run: str) -> tuple[int, str]:
    """The study's phases in order, then the γ sweep, Phase 3's seeds and the ensemble."""
    if run in PHASES:
        return (PHASES.index(run), "")
    return (len(PHASES) + run.startswith(PHASE3 + "/") + 2 * (run == ENSEMBLE), run)


def render_markdown(
    summary: dict[str, Any],
    title: str = "speciesclf: results",
    preamble: str = "Generated by the `report` stage from `metrics/`; do not edit by hand.",
    all_species: bool = False,
) -> str:
    """The report as Markdown; ``all_species`` lists every species' F1 instead of the rarest ten."""
    models = {run: summary["models"][run] for run in sorted(summary["models"], key=_run_order)}
    out = [f"# {title}", "", preamble, ""]
    out += _models_table(models, summary["delta_vs_baseline"])
    out += _recording_table(models)
    out += _gamma_table(summary["gamma_sweep"], summary.get("best_gamma"))
    out += _seeds_table(summary.get(PHASE3, {}))
    out += _ensemble_lines(models.get(ENSEMBLE), models)
    out += _species_table(summary["per_species_f1"] if all_species else summary["rarest_species"], all_species)
    out += _resources_table(models)
    out += _verdict_lines(summary["verdict"])
    return "\n".join(out) + "\n"


def _models_table(models: dict[str, Any], deltas: dict[str, Any]) -> list[str]:
    out = ["## All models (test split, window level; Δ against the baseline)", ""]
    columns = ["run", "accuracy", "Δ", "macro-F1", "Δ", "rare F1", "Δ", "common F1", "balanced acc.", "top-5"]
    out += head([*columns, "best epoch", "epochs", "train s"])
    for run, m in models.items():
        d = deltas[run]
        secs = m.get("train_seconds")
        out.append(
            f"| {run} | {cell(m['accuracy'])} | {cell(d['accuracy'], True)} | {cell(m['f1_macro'])} | "
            f"{cell(d['f1_macro'], True)} | {cell(m['f1_rare'])} | {cell(d['f1_rare'], True)} | "
            f"{cell(m['f1_common'])} | {cell(m['balanced_accuracy'])} | {cell(m['top5_accuracy'])} | "
            f"{m.get('best_epoch', MISSING)} | {m.get('epochs_run', MISSING)} | {cell(secs, spec='.0f')} |"
        )
    return out


def _recording_table(models: dict[str, Any]) -> list[str]:
    rec = [(run, m["recording"]) for run, m in models.items() if "recording" in m]
    if not rec:
        return []
    out = ["", "## Recording level (mean of window probabilities per recording)", ""]
    out += head(["run", "recordings", "accuracy", "macro-F1", "rare F1"])
    return out + [
        f"| {run} | {r['n_recordings']} | {cell(r['accuracy'])} | {cell(r['f1_macro'])} | {cell(r['f1_rare'])} |"
        for run, r in rec
    ]


def _gamma_table(sweep: list[dict[str, Any]], best: dict[str, Any] | None) -> list[str]:
    if not sweep:
        return []
    out = ["", "## γ sensitivity (AudioCNN + focal loss)", ""]
    out += head(["γ", "val macro-F1", "accuracy", "macro-F1", "rare F1", "common F1"])
    out += [
        f"| {s['gamma']} | {cell(s['val_f1_macro'])} | {cell(s['accuracy'])} | {cell(s['f1_macro'])} "
        f"| {cell(s['f1_rare'])} | {cell(s['f1_common'])} |"
        for s in sweep
    ]
    if best is None:
        return out
    line = (
        f"Best γ on validation macro-F1: **{best['gamma']}** ({cell(best['val_f1_macro'])}; on test, macro-F1 "
        f"{cell(best['f1_macro'])}, rare {cell(best['f1_rare'])}, common {cell(best['f1_common'])})."
    )
    if best["differs"]:
        line += f" Phases 2A and 2B train with `loss.gamma` {best['default_gamma']}; `{best['command']}` re-runs them."
    elif best["default_gamma"] is not None:
        line += " It is `loss.gamma` already."
    return [*out, "", line]


def _seeds_table(phase3: dict[str, Any]) -> list[str]:
    if "window" not in phase3:
        return []
    n = len(phase3["seeds"])
    out = ["", f"## Phase 3 over {n} seed{'s' * (n > 1)} (test split; mean ± standard deviation, min–max)", ""]
    out += head(["level", "accuracy", "macro-F1", "rare F1"])
    for level in ("window", "recording"):
        cells = [phase3[level][k] for k in _SEED_METRICS]
        out.append(row([level, *(_spread(c) for c in cells)]))
    return out


def _spread(c: dict[str, float] | None) -> str:
    """A score over the seeds: mean ± standard deviation (min–max)."""
    return MISSING if c is None else f"{mean_sd(c['mean'], c['std'])} ({cell(c['min'])}–{cell(c['max'])})"


def _ensemble_lines(ensemble: dict[str, Any] | None, models: dict[str, Any]) -> list[str]:
    if not ensemble:
        return []
    lines = _ensemble_summary(ensemble)
    members = [
        (run, models[run]["validation"]["recording"])
        for run in ensemble["members"]
        if "validation" in models.get(run, {})
    ]
    if "validation" in ensemble and members:  # the choice between the ensemble and its best member, on validation
        best_run, best = max(members, key=lambda m: m[1]["f1_macro"])
        val = ensemble["validation"]["recording"]
        choice = "the ensemble" if val["f1_macro"] > best["f1_macro"] else best_run
        lines += [
            "",
            f"On the validation split (recording level) the ensemble scores accuracy {cell(val['accuracy'])}, "
            f"macro-F1 {cell(val['f1_macro'])}; its best member there, {best_run}, {cell(best['accuracy'])} and "
            f"{cell(best['f1_macro'])}: validation prefers {choice}.",
        ]
    return lines


def _ensemble_summary(ensemble: dict[str, Any]) -> list[str]:
    members = ", ".join(ensemble["members"])
    rec = ensemble["recording"]
    level = ensemble.get("averaged", "window")
    why = " (its members cut other windows: every figure here is per recording)" if level == "recording" else ""
    return [
        "",
        "## Ensemble",
        "",
        f"`ensemble` averages the {level} probabilities of {members} (params `ensemble.runs`){why}: test accuracy "
        f"{cell(ensemble['accuracy'])}, macro-F1 {cell(ensemble['f1_macro'])}, rare F1 {cell(ensemble['f1_rare'])}; "
        f"recording accuracy {cell(rec['accuracy'])}, macro-F1 {cell(rec['f1_macro'])}.",
    ]


def _species_table(rows: list[dict[str, Any]], all_species: bool) -> list[str]:
    if not rows:
        return []
    runs = sorted((k for k in rows[0] if k not in ("species", "train_count", "support")), key=_run_order)
    heading = (
        "Per-species F1 (test windows), rarest species first" if all_species else "Per-species F1 of the rarest species"
    )
    out = ["", f"## {heading}", ""]
    out += head(["species", "train windows", "test windows", *runs])
    return out + [row([r["species"], r["train_count"], r["support"], *(cell(r[k]) for k in runs)]) for r in rows]


def _resources_table(models: dict[str, Any]) -> list[str]:
    rows = [(run, m["resources"]) for run, m in models.items() if m.get("resources")]
    if not rows:
        return []
    out = ["", "## Resources (wall-clock and memory vary run to run)", ""]
    out += head(["run", "model", "parameters", "device", "precision", "batch", "peak memory MB", "s / epoch"])
    for run, r in rows:
        memory = f"{cell(r['peak_memory_mb'], spec='.0f')} ({r['memory']})"
        out.append(
            f"| {run} | {r['model']} | {r['parameters']:,} | {r['device']} | {r['precision']} | "
            f"{r['batch_size']} × {r['processes']} | {memory} | {cell(r['seconds_per_epoch'], spec='.1f')} |"
        )
    return out


def _memory_checks(models: dict[str, Any], targets: dict[str, float]) -> list[dict[str, Any]]:
    """The study's GPU memory limits per architecture at batch 32, judged on the runs trained on a GPU."""
    limits = {"AudioCNN": targets["max_gpu_memory_gb_audiocnn"], "AudioCNNv2": targets["max_gpu_memory_gb_audiocnnv2"]}
    checks = []
    for run, m in sorted(models.items()):
        r = m.get("resources") or {}
        if r.get("model") in limits and r["device"].startswith("cuda") and r["peak_memory_mb"] is not None:
            gb = r["peak_memory_mb"] / 1024
            checks.append(
                {
                    "run": run,
                    "metric": "gpu_memory_gb",
                    "value": gb,
                    "target": limits[r["model"]],
                    "batch_size": r["batch_size"],
                    "pass": gb < limits[r["model"]],
                }
            )
    return checks


def _verdict_lines(verdict: dict[str, Any]) -> list[str]:
    out = ["", "## Go / no-go against the study's targets", ""]
    for phase in ("phase2a", "phase2b", "stretch"):
        checks = "; ".join(_check_text(c) for c in verdict[phase]["checks"])
        out.append(f"- **{phase}: {'GO' if verdict[phase]['go'] else 'NO-GO'}** — {checks}")
    if "phase1" in verdict:
        out.append(f"- phase1 (the study's Phase 1 collapsed): {_check_text(verdict['phase1']['checks'][0])}")
    collapsed = ", ".join(verdict.get("collapsed", [])) or "none"
    out += ["", f"Collapsed runs ({_STABILITY_RULE}): {collapsed}."]
    if "memory" in verdict:
        memory = [
            f"{c['run']} {c['value']:.2f} GB < {c['target']:g} GB (batch {c['batch_size']}): "
            + ("pass" if c["pass"] else "fail")
            for c in verdict["memory"]
        ]
        judged = "; ".join(memory) or "not judged: no AudioCNN or AudioCNNv2 run trained on a GPU"
        out += ["", f"GPU memory (the study's limits: AudioCNN and AudioCNNv2 at batch 32): {judged}."]
    return out


_STABILITY_RULE = (
    f"a non-finite loss, a last validation macro-F1 under {FELL_BACK:g} of its best, or over {CONCENTRATED:g} of "
    "the test predictions on one species that holds under half as much of the test set"
)


def _check_text(c: dict[str, Any]) -> str:
    result = "pass" if c["pass"] else "fail"
    if c["metric"] == "stability":
        return f"{c['run']} stable ({cell(c['value'])}): {result}"
    target = f"{c['target_run']}'s {cell(c['target'])}" if "target_run" in c else c["target"]
    return f"{c['run']} {c['metric']} {cell(c['value'])} > {target}: {result}"


def main(argv: list[str] | None = None, prog: str = "python -m speciesclf.evaluation.report") -> int:
    """Render a summary JSON (the schema of ``metrics/summary.json``) as Markdown."""
    parser = argparse.ArgumentParser(prog=prog, description=main.__doc__)
    parser.add_argument("summary", help="a summary JSON written by the report stage")
    parser.add_argument("--title", default="speciesclf: results")
    parser.add_argument("--preamble", default="", help="Markdown under the title")
    parser.add_argument("--all-species", action="store_true", help="every species' F1, not only the rarest ten")
    parser.add_argument("--out", required=True, help="the Markdown file to write (whole)")
    args = parser.parse_args(argv)
    preamble = args.preamble.strip() or f"Rendered from `{args.summary}`."
    try:
        summary = json.loads(Path(args.summary).read_text(encoding="utf-8"))
        text = render_markdown(summary, args.title, preamble, all_species=args.all_species)
        write_text(args.out, text)
    except KeyboardInterrupt:  # write_text leaves no temporary file behind
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as exc:
        print(f"{prog}: error: {_why(exc, args.summary, args.out)}", file=sys.stderr)
        return 2
    return 0


def _why(exc: Exception, summary: str, out: str) -> str:
    """One line naming the file: what was wrong with it, or why the report could not be written."""
    if isinstance(exc, FileNotFoundError) and exc.filename == summary:
        return f"{summary}: not found"
    if isinstance(exc, OSError):
        return f"{exc.filename or out}: cannot write ({exc.strerror or exc})"
    if isinstance(exc, ValueError):  # not JSON, or not UTF-8
        return f"{summary}: not valid JSON ({str(exc).splitlines()[0]})"
    missing = f"no key {exc}" if isinstance(exc, KeyError) else str(exc)
    return f"{summary}: not a summary the report stage writes ({missing})"


if __name__ == "__main__":
    raise SystemExit(main())
