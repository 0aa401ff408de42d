"""Detection measured: a model's detections in soundscapes scored against their truth, per-species thresholds
against one global threshold.

Each soundscape is scored once by the model (windows every ``hop_seconds``, as ``speciesclf predict --hop``), and
its window scores are turned into detections (:class:`speciesclf.detections.Detector`) under

- the **fitted** per-species thresholds of the model's card (:mod:`speciesclf.thresholds`; fitted on the model's
  held-out windows, never on a soundscape), and
- each **global** threshold of a grid, one for every species. The one with the best macro event-F1 on the tuning
  soundscapes is the global contender on the held-out ones; the best on the held-out ones themselves is reported
  too, as an oracle no honest choice can exceed.

Detections are matched to the truth's bouts by sed_eval's event-based metrics: a detection of the bout's species
whose beginning lies within ``collar_seconds`` of the bout's beginning finds it (each bout and each detection once).
Per species: precision, recall, F1; macro: their mean over the species that call (one never detected counts 0);
overall: counted over every event, so false detections of species that never call count too.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speciesclf.detections import Detector, read_raven
from speciesclf.evaluation.markdown import cell, head, row
from speciesclf.predictor import Predictor

__all__ = ["CURVE_COLUMNS", "GLOBAL_GRID", "measure_detection", "render_markdown", "score_events"]

CURVE_COLUMNS = tuple(
    ["threshold"] + [f"{level}_{k}" for level in ("macro", "overall") for k in ("precision", "recall", "f_measure")]
)
GLOBAL_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 to 0.95

Events = dict[str, list[tuple[float, float, str]]]  # recording name → (begin, end, species) events


def score_events(truth: Events, detected: Events, species: Sequence[str], collar: float) -> dict[str, Any]:
    """sed_eval's event-based scores of ``detected`` against ``truth`` (onsets within ``collar`` seconds)."""
    with warnings.catch_warnings():  # dcase_util imports pkg_resources, which warns that it is deprecated
        warnings.simplefilter("ignore", UserWarning)
        import sed_eval  # imported when scoring: it pulls dcase_util, which nothing else needs

    metric = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=list(species), t_collar=float(collar), evaluate_onset=True, evaluate_offset=False
    )
    for name in truth:
        as_dicts = [
            [{"filename": name, "onset": b, "offset": e, "event_label": s} for b, e, s in events]
            for events in (truth[name], detected.get(name, []))
        ]
        metric.evaluate(*as_dicts)
    with warnings.catch_warnings():  # its class-wise means of species never detected: nan, warned about
        warnings.simplefilter("ignore", RuntimeWarning)
        results = metric.results()
    per_species = {}
    for name in species:
        r = results["class_wise"][name]
        bouts, found = int(r["count"]["Nref"]), int(r["count"]["Nsys"])
        if bouts or found:
            hits = round(r["f_measure"]["recall"] * bouts) if bouts else 0  # sed_eval's recall: hits / bouts
            per_species[name] = {"bouts": bouts, "detections": found, **_prf(hits, bouts, found)}
    # the macro mean counts every species that calls: one it never detects scores 0 (sed_eval's own class-wise
    # average skips it as undefined, so a threshold that detects almost nothing would look best)
    calling = [r for r in per_species.values() if r["bouts"]]
    macro = {k: round(float(np.mean([r[k] for r in calling])), 6) for k in ("precision", "recall", "f_measure")}
    overall = results["overall"]["f_measure"]
    return {
        "macro": macro,
        "overall": {k: _finite(overall[k]) for k in ("precision", "recall", "f_measure")},
        "per_species": per_species,
    }


def _prf(hits: int, bouts: int, found: int) -> dict[str, float]:
    """Precision, recall and F1 of one species (0 where nothing is detected or nothing calls)."""
    precision, recall = hits / found if found else 0.0, hits / bouts if bouts else 0.0
    f1 = 2 * hits / (bouts + found) if bouts + found else 0.0
    return {"precision": round(precision, 6), "recall": round(recall, 6), "f_measure": round(f1, 6)}


def _finite(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def _detections(predictor: Predictor, scored: dict[str, tuple[list[float], np.ndarray, float]], thresholds) -> Events:
    out = {}
    for name, (starts, proba, duration) in scored.items():
        detector = Detector(name, predictor.species, thresholds, predictor.clip_seconds)
        detector.add(starts, proba)
        out[name] = [(d.begin, d.end, d.species) for d in detector.finish(duration)]
    return out


def _window_scores(predictor: Predictor, audio: Path) -> tuple[list[float], np.ndarray, float]:
    """One soundscape's window starts, ``(windows, species)`` probabilities and duration in seconds."""
    import soundfile as sf

    batches = list(predictor.windows(audio))
    return [s for b, _ in batches for s in b], np.concatenate([p for _, p in batches]), sf.info(audio).duration


def measure_detection(
    model_dir: str | os.PathLike[str],
    tune: Sequence[tuple[Path, Path]],
    held_out: Sequence[tuple[Path, Path]],
    hop_seconds: float,
    collar: float,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """A model's detections on the ``held_out`` soundscapes (audio, truth table) under its fitted per-species
    thresholds and under the global threshold that did best on the ``tune`` soundscapes; also the global threshold
    best on the held-out ones themselves (an oracle), per species, and the held-out precision-recall rows of the
    global grid (macro and overall, one row per threshold)."""
    predictor = Predictor(model_dir, hop_seconds)
    block, species = predictor.card.get("thresholds"), predictor.species
    if block is None:
        raise ValueError(f"{Path(model_dir) / 'model.json'}: no fitted thresholds; retrain it with this version")
    truth = {audio.name: read_raven(table) for audio, table in [*tune, *held_out]}
    strangers = sorted({s for events in truth.values() for *_, s in events} - set(species))
    if strangers:  # a model of the user's own collection: the synthetic soundscapes hold none of its species
        reason = f"the soundscapes' species are not the model's ({len(strangers)} it lacks, e.g. {strangers[0]})"
        return {"measured": False, "reason": reason}, []
    scored = {audio.name: _window_scores(predictor, audio) for audio, _ in [*tune, *held_out]}

    def scores(names: Sequence[str], thresholds: np.ndarray) -> dict[str, Any]:
        part = {n: scored[n] for n in names}
        return score_events({n: truth[n] for n in names}, _detections(predictor, part, thresholds), species, collar)

    tune_names, test_names = [a.name for a, _ in tune], [a.name for a, _ in held_out]
    fitted_thresholds = np.asarray([block["species"][s]["threshold"] for s in species])
    fitted = scores(test_names, fitted_thresholds)
    on_tune = {t: scores(tune_names, np.full(len(species), t))["macro"]["f_measure"] for t in GLOBAL_GRID}
    on_test = {t: scores(test_names, np.full(len(species), t)) for t in GLOBAL_GRID}
    tuned = max(GLOBAL_GRID, key=lambda t: on_tune[t])  # the first (lowest) on a tie
    oracle = max(GLOBAL_GRID, key=lambda t: on_test[t]["macro"]["f_measure"])
    curve = [{"threshold": t, **_pr(on_test[t], "macro"), **_pr(on_test[t], "overall")} for t in GLOBAL_GRID]
    tuned_values = np.full(len(species), tuned)
    # the spread: the same comparison on each held-out soundscape alone (macro over the species calling in it)
    differences = [
        scores([n], fitted_thresholds)["macro"]["f_measure"] - scores([n], tuned_values)["macro"]["f_measure"]
        for n in test_names
    ]
    metrics = {
        "measured": True,
        "soundscapes": {"tune": len(tune), "held_out": len(held_out)},
        "held_out_seconds": round(sum(scored[n][2] for n in test_names), 3),
        "held_out_bouts": sum(len(truth[n]) for n in test_names),
        "hop_seconds": hop_seconds,
        "collar_seconds": collar,
        "thresholds_rule": {k: block.get(k) for k in ("rule", "beta", "target_precision", "shrinkage", "fitted_on")},
        "species_fitted": sum(v["fitted"] for v in block["species"].values()),  # the others: the pooled fallback
        "species": len(species),
        "fitted": _headline(fitted),
        "tuned_global": {"threshold": tuned, **_headline(on_test[tuned])},
        "oracle_global": {"threshold": oracle, **_headline(on_test[oracle])},
        "fitted_minus_tuned_per_soundscape": _spread(differences),
        "per_species": {"fitted": fitted["per_species"], "tuned_global": on_test[tuned]["per_species"]},
    }
    return metrics, curve


def _spread(differences: Sequence[float]) -> dict[str, Any]:
    """Mean and sd of per-soundscape differences, and how many are better, the same, worse."""
    return {
        "mean": round(float(np.mean(differences)), 6),
        "sd": round(float(np.std(differences, ddof=1)), 6) if len(differences) > 1 else None,
        "better": sum(d > 0 for d in differences),
        "same": sum(d == 0 for d in differences),
        "worse": sum(d < 0 for d in differences),
    }


def _headline(scores: dict[str, Any]) -> dict[str, Any]:
    return {"macro": scores["macro"], "overall": scores["overall"]}


def _pr(scores: dict[str, Any], level: str) -> dict[str, float]:
    return {f"{level}_{k}": scores[level][k] or 0.0 for k in ("precision", "recall", "f_measure")}


_PRF_COLUMNS = ("precision", "recall", "event-F1")  # the detection table's names of precision, recall, f_measure


def render_markdown(metrics: dict[str, Any]) -> str:
    """The detection report: fitted per-species thresholds against global ones, then per species."""
    if not metrics["measured"]:
        return f"# Detection in soundscapes\n\nModel `{metrics['model']}`: not measured; {metrics['reason']}.\n"
    rule, n = metrics["thresholds_rule"], metrics["soundscapes"]
    fitted, tuned, oracle = metrics["fitted"], metrics["tuned_global"], metrics["oracle_global"]
    rows = [
        ("fitted per species (on the model's held-out windows)", fitted),
        (f"one global threshold, best on the tuning soundscapes ({tuned['threshold']:g})", tuned),
        (f"one global threshold, best on these soundscapes themselves ({oracle['threshold']:g}; an oracle)", oracle),
    ]
    lines = [
        "# Detection in soundscapes",
        "",
        f"Model `{metrics['model']}` on {n['held_out']} held-out synthetic soundscapes ({metrics['held_out_seconds']:g}"
        f" s, {metrics['held_out_bouts']} bouts of calls), windows every {metrics['hop_seconds']:g} s. A detection "
        f"finds a bout of its species when it begins within {metrics['collar_seconds']:g} s of the bout (sed_eval, "
        f"event-based); macro: the mean over the species that call, one never detected counting 0. The per-species "
        f"thresholds were fitted on the model's {rule['fitted_on']} (rule `{rule['rule']}`, β {rule['beta']:g}; each "
        f"species' own threshold shrunk towards the one of all species pooled, which counts as {rule['shrinkage']:g} "
        f"windows; {metrics['species'] - metrics['species_fitted']} of {metrics['species']} species had no window "
        f"of their own and take the pooled one), the global one chosen on "
        f"{n['tune']} other soundscapes; neither saw the held-out ones.",
        "",
        *head(["thresholds", *(f"{level} {k}" for level in ("macro", "overall") for k in _PRF_COLUMNS)]),
    ]
    for name, m in rows:
        cells = [cell(m[level][k]) for level in ("macro", "overall") for k in ("precision", "recall", "f_measure")]
        lines.append(row([name, *cells]))
    gain = fitted["macro"]["f_measure"] - tuned["macro"]["f_measure"]
    verdict = "beat" if gain > 0 else "did not beat"
    spread = metrics["fitted_minus_tuned_per_soundscape"]
    lines += [
        "",
        f"Fitted per-species thresholds {verdict} the tuned global threshold: {gain:+.3f} macro event-F1. Soundscape "
        f"by soundscape, fitted minus global is {spread['mean']:+.3f} ± {spread['sd'] or 0:.3f} (mean ± sd): better "
        f"on {spread['better']}, the same on {spread['same']}, worse on {spread['worse']}.",
        "",
    ]
    lines += ["## Per species that call", "", *head(["species", "bouts", "F1 fitted", "F1 tuned global"])]
    per = metrics["per_species"]
    for name in sorted(s for s, r in per["fitted"].items() if r["bouts"]):
        g = per["tuned_global"].get(name, {})
        lines.append(
            f"| {name} | {per['fitted'][name]['bouts']} | {cell(per['fitted'][name]['f_measure'])} "
            f"| {cell(g.get('f_measure'))} |"
        )
    return "\n".join(lines) + "\n"
