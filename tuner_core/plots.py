"""The pictures of a study, as PNG bytes for the chat and the reports.

Every function reads the study (or trial) from the storage alone and draws with
matplotlib's object API (``Figure``, never ``pyplot``), so it is safe in threads
and needs no display. Figures are 8 × 5 inches at 100 dpi (800 × 500 pixels).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import optuna
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from optuna.trial import FrozenTrial, TrialState

from train.figures import draw_alignment

log = logging.getLogger(__name__)

FIGSIZE = (8, 5)
DPI = 100
BEST_COLOR = "crimson"
TRIAL_COLORMAP = "viridis"

# How each outcome's learning curve is drawn; failed trials are marked with an "x".
CURVE_STYLES: dict[str, dict[str, object]] = {
    "completed": {"linestyle": "-", "alpha": 0.9},
    "early_stopped": {"linestyle": "-.", "alpha": 0.9},
    "pruned": {"linestyle": "--", "alpha": 0.35},
    "stopped_by_user": {"linestyle": ":", "alpha": 0.8},
    "running": {"linestyle": "-", "alpha": 0.5},
}
_STATE_OUTCOMES = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned",
                   TrialState.FAIL: "failed", TrialState.RUNNING: "running",
                   TrialState.WAITING: "waiting"}


def trial_outcome(trial: FrozenTrial) -> str:
    """The runner's ``outcome`` attribute, or one read from the state for a trial without it
    (still running, or failed with its worker)."""
    return trial.user_attrs.get("outcome") or _STATE_OUTCOMES[trial.state]


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None


def _objective_label(study: optuna.Study) -> str:
    metric = study.user_attrs.get("config", {}).get("objective_metric")
    sense = "lower" if study.direction is optuna.study.StudyDirection.MINIMIZE else "higher"
    named = f"{metric}, " if metric else ""
    return f"objective ({named}{sense} is better)"


def _figure(title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    return fig, ax


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _say_empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def learning_curves_png(study: optuna.Study) -> bytes:
    """The objective at every validation of every trial, styled by outcome.

    Colour is the trial number (a colour bar, not a legend entry per trial, so 50
    trials stay readable); the legend names the outcomes, and the best trial is
    drawn thick in red and labelled.
    """
    fig, ax = _figure(f"{study.study_name}: learning curves")
    ax.set_xlabel("validation (one per epoch by default)")
    ax.set_ylabel(_objective_label(study))
    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    if not trials:
        _say_empty(ax, "no trial has reported a validation yet")
        return _png(fig)

    best = _best_trial(study)
    norm = Normalize(0, max(t.number for t in trials) or 1)
    cmap = colormaps[TRIAL_COLORMAP]
    counts: dict[str, int] = {}
    for trial in trials:
        outcome = trial_outcome(trial)
        counts[outcome] = counts.get(outcome, 0) + 1
        steps, values = zip(*sorted(trial.intermediate_values.items()), strict=True)
        color = cmap(norm(trial.number))
        if outcome == "failed":
            ax.plot(steps[-1], values[-1], marker="x", color=color, linestyle="none")
        elif best is None or trial.number != best.number:
            ax.plot(steps, values, color=color, linewidth=1.2, **CURVE_STYLES[outcome])

    handles = [Line2D([], [], color="grey", linewidth=1.2, **CURVE_STYLES[outcome],
                      label=f"{outcome.replace('_', ' ')} ({counts[outcome]})")
               for outcome in CURVE_STYLES if outcome in counts]
    if "failed" in counts:
        handles.append(Line2D([], [], color="grey", marker="x", linestyle="none",
                              label=f"failed, last value ({counts['failed']})"))
    if best is not None and best.intermediate_values:
        steps, values = zip(*sorted(best.intermediate_values.items()), strict=True)
        (line,) = ax.plot(steps, values, color=BEST_COLOR, linewidth=3,
                          label=f"best: trial {best.number} ({best.value:.4g})")
        handles.insert(0, line)
    ax.legend(handles=handles, fontsize="small", loc="upper right")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="trial number")
    ax.grid(alpha=0.3)
    return _png(fig)


def optimization_history_png(study: optuna.Study) -> bytes:
    """Each finished trial's value by trial number, and the best value so far."""
    fig, ax = _figure(f"{study.study_name}: optimization history")
    ax.set_xlabel("trial")
    ax.set_ylabel(_objective_label(study))
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        _say_empty(ax, "no trial has completed yet")
        return _png(fig)

    numbers = np.array([t.number for t in done])
    values = np.array([t.value for t in done])
    for outcome, marker in (("completed", "o"), ("early_stopped", "s")):
        chosen = [trial_outcome(t) == outcome for t in done]
        if any(chosen):
            ax.scatter(numbers[chosen], values[chosen], marker=marker, alpha=0.8,
                       label=outcome.replace("_", " "))
    minimize = study.direction is optuna.study.StudyDirection.MINIMIZE
    best_so_far = (np.minimum if minimize else np.maximum).accumulate(values)
    ax.step(numbers, best_so_far, where="post", color=BEST_COLOR, label="best so far")
    best = _best_trial(study)
    if best is not None:
        ax.scatter([best.number], [best.value], marker="*", s=250, color=BEST_COLOR, zorder=3,
                   label=f"best: trial {best.number} ({best.value:.4g})")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _png(fig)


def param_importances_png(study: optuna.Study) -> bytes | None:
    """How much of the objective's variance each searched parameter explains (fANOVA).

    None while fewer than two trials have completed, when no parameter took more
    than one value among them, or when their values do not vary (nothing to explain).
    """
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        return None
    # fANOVA happily ranks parameters that never changed; only varying ones mean anything.
    varying = sorted(name for name in {n for t in done for n in t.params}
                     if len({repr(t.params.get(name)) for t in done}) > 1)
    if not varying:
        return None
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=varying)
    except RuntimeError as exc:  # fANOVA: "zero total variance", all values equal
        log.info("no parameter importances for %s: %s", study.study_name, exc)
        return None

    fig, ax = _figure(f"{study.study_name}: parameter importances ({len(done)} completed trials)")
    names = list(importances)[::-1]  # the most important on top
    bars = ax.barh(names, [importances[name] for name in names], color="steelblue")
    ax.bar_label(bars, fmt="%.2f", padding=3)
    ax.set_xlabel("importance (fANOVA: share of the objective's variance)")
    ax.set_ylabel("parameter")
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def latest_alignment(trial: FrozenTrial) -> tuple[int, Path] | None:
    """``(epoch, path)`` of the newest alignment matrix the trainer saved for ``trial``."""
    run_dir = trial.user_attrs.get("run_dir")
    if not run_dir:
        return None
    saved = [(int(path.stem.removeprefix("alignment_e")), path)
             for path in (Path(run_dir) / "artifacts").glob("alignment_e*.npy")]
    return max(saved) if saved else None


def alignment_png(trial: FrozenTrial, study_name: str = "") -> bytes | None:
    """The trial's latest attention alignment, redrawn from the trainer's saved matrix.

    None when the trainer saved none (its ``artifacts`` setting was ``none``, or the
    run folder is on another machine).
    """
    latest = latest_alignment(trial)
    if latest is None:
        return None
    epoch, path = latest
    prefix = f"{study_name}: " if study_name else ""
    fig, ax = _figure(f"{prefix}trial {trial.number}, alignment at epoch {epoch}")
    draw_alignment(ax, np.load(path))
    return _png(fig)
