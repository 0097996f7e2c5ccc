"""A study's report: its figures as PNG files and a Markdown page that ties them together.

``python -m tuner_core report --study NAME --out DIR`` writes, from the storage alone:

* ``learning_curves.png``, ``optimization_history.png``, ``anytime.png`` (the best value
  against the compute spent), and when there is something to
  show ``param_importances.png`` (else ``report.md`` says why not) and
  ``best_alignment.png`` (:mod:`tuner_core.reporting.plots`);
* ``report.md``: the study's state, best value (and whether the champion is confirmed
  over training seeds) and parameters, trials by state and by
  outcome, why each trial stopped, how each completed trial sounds (its listening
  evaluation), adaptations, anomalies, time spent, and the figures.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tuner_core.reporting import plots
from tuner_core.reporting.summary import (
    best_trial,
    confirmation_line,
    listening_line,
    study_status,
    trial_row,
)
from tuner_core.storage.attributes import CONFIG_ATTR, CREATED_ATTR, FINISHED_ATTR


def write_report(study: optuna.Study, out_dir: Path) -> Path:
    """Write the figures and ``report.md`` of ``study`` into ``out_dir``; the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = _write_figures(study, out_dir)
    path = out_dir / "report.md"
    path.write_text(render_markdown(study, images), encoding="utf-8")
    return path


def _write_figures(study: optuna.Study, out_dir: Path) -> dict[str, str]:
    """Draw every figure there is; ``{caption: file name}`` of those written."""
    best = best_trial(study)
    figures = {
        "Learning curves": ("learning_curves.png", plots.learning_curves_png(study)),
        "Optimization history": ("optimization_history.png",
                                 plots.optimization_history_png(study)),
        "Best value against compute spent": ("anytime.png", plots.anytime_png(study)),
        "Parameter importances": ("param_importances.png", plots.param_importances_png(study)),
        "Alignment of the best trial": (
            "best_alignment.png",
            plots.alignment_png(study.get_trials(deepcopy=False)[best["number"]],
                                study.study_name) if best else None),
    }
    written = {}
    for caption, (name, png) in figures.items():
        if png is None:
            # A figure from an earlier report of this study would now be stale.
            (out_dir / name).unlink(missing_ok=True)
            continue
        (out_dir / name).write_bytes(png)
        written[caption] = name
    return written


# --- Markdown ---------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], empty: str) -> list[str]:
    """A Markdown table, or the sentence ``empty`` when there are no rows."""
    body = ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    if not body:
        return [empty]
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers), *body]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _changes(changes: dict[str, Sequence[float]]) -> str:
    return ", ".join(f"{name} {old:.4g} → {new:.4g}" for name, (old, new) in changes.items())


def render_markdown(study: optuna.Study, images: dict[str, str]) -> str:
    """The text of ``report.md``; ``images`` maps captions to the figure files beside it."""
    trials = study.get_trials(deepcopy=False)
    sections = [
        _overview(study, trials),
        ["## Trials", "", "By Optuna state:", "",
         *_table(["state", "trials"], [(name.lower(), n) for name, n
                                       in study_status(study)["counts"].items() if n],
                 "No trial yet."),
         "", "By outcome:", "",
         *_table(["outcome", "trials"],
                 Counter(plots.trial_outcome(t) for t in trials).most_common(), "No trial yet.")],
        ["## Why trials stopped", "", *_table(
            ["trial", "outcome", "criterion", "epoch", "reason"],
            [(t.number, t.user_attrs["outcome"], t.user_attrs.get("criterion"),
              t.user_attrs.get("stop_epoch"), t.user_attrs.get("reason"))
             for t in trials if t.user_attrs.get("outcome")],
            "No trial has finished yet.")],
        ["## Listening", "", "Each completed trial judged as a listener would "
         "(`python -m train.evaluate` on its best checkpoint):", "", *_table(
            ["trial", "value", "CER ratio", "MCD", "judgement", "requirements"],
            [(row["number"], row["value"], row["cer_ratio"], row["mcd"],
              listening_line(row["listening"]), _requirements(row["requirements_unmet"]))
             for row in map(trial_row, trials) if row["state"] == "COMPLETE"],
            "No trial has completed yet.")],
        ["## Adaptations", "", *_table(
            ["trial", "epoch", "criterion", "changes", "reason"],
            [(t.number, a["epoch"], a["criterion"], _changes(a["changes"]), a["reason"])
             for t in trials for a in t.user_attrs.get("adaptations", [])],
            "No trial was adapted.")],
        ["## Anomalies", "", *_table(
            ["trial", "epoch", "metric", "what happened"],
            [(t.number, a["epoch"], a["metric"], a["message"])
             for t in trials for a in t.user_attrs.get("anomalies", [])],
            "No metric spiked or became NaN.")],
        ["## Time", "", *_time_spent(study, trials)],
    ]
    missing_importances = plots.importances_unavailable(study)
    sections.append(["## Figures", "", *(f"![{caption}]({name})\n"
                                         for caption, name in images.items()),
                     *([f"Parameter importances are not drawn: {missing_importances}."]
                       if missing_importances else [])])
    return "\n\n".join("\n".join(section) for section in sections).rstrip() + "\n"


def _requirements(unmet: list[str] | None) -> str:
    """``registry.requirements`` in a report cell: met, the failed ones, or not checked."""
    if unmet is None:
        return "not checked"
    return "fails " + "; ".join(unmet) if unmet else "met"


def _overview(study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[str]:
    """The title, the study's state and objective, and the best trial with its parameters."""
    status = study_status(study)
    best = best_trial(study)
    metric = study.user_attrs.get(CONFIG_ATTR, {}).get("objective_metric", "objective")
    state = status["state"] + (f" ({status['end_reason']})" if status["end_reason"] else "")
    best_value = f"{best['value']:.4g} (trial {best['number']})" if best else "none yet"
    return [f"# Study {study.study_name}", "",
            f"- State: {state}",
            f"- Objective: {metric}, {status['direction']}",
            f"- Trials: {len(trials)} of a budget of {status['n_trials'] or 'unknown'}",
            f"- Best value: {best_value}",
            *([f"- Champion: {confirmation_line(best['confirmation'])}",
               f"- Champion as a listener hears it: {listening_line(best['listening'])}"]
              if best else []), "",
            "## Best parameters", "",
            *_table(["parameter", "value"], best["params"].items() if best else [],
                    "No trial has completed yet.")]


def _time_spent(study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[str]:
    """Wall time from the study's creation to its end (or now), and the trainers' total."""
    attrs = study.user_attrs
    lines = []
    if attrs.get(CREATED_ATTR):
        finished = attrs.get(FINISHED_ATTR)
        wall = (finished or time.time()) - attrs[CREATED_ATTR]
        lines.append(f"- Study wall time: {_duration(wall)}"
                     + ("" if finished else " so far (still running)"))
    compute = sum(t.user_attrs.get("seconds") or 0.0 for t in trials)
    lines.append(f"- Trainer compute, all trials together: {_duration(compute)}")
    return lines
