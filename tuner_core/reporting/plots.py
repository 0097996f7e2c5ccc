"""The pictures of a study, as PNG bytes for the chat and the reports.

Every function reads the study (or trial) from the storage alone. Figures are 8 × 5
inches at 100 dpi (800 × 500 pixels).

- :func:`learning_curves_png` is the project's own: every trial's objective per
  validation, styled by how the trial ended. It draws with matplotlib's object API
  (``Figure``, never ``pyplot``), so the bot may call it from threads.
- :func:`optimization_history_png` and :func:`param_importances_png` are Optuna's own
  plots (``optuna.visualization.matplotlib``, the ones optuna-dashboard shows too), with
  integer trial axes and the best trial marked. Optuna draws them with ``pyplot`` and
  its "ggplot" style, so they are drawn one at a time and leave no style behind.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
from matplotlib import colormaps, patheffects
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import matplotlib as optuna_plots

from train.tacotron2.figures import draw_alignment
from tuner_core.storage.attributes import CONFIG_ATTR

FIGSIZE = (8, 5)
DPI = 100
BEST_COLOR = "crimson"
# One colour per trial, cycled: tab10 without its red (the best trial's), then Dark2;
# strong colours all, so that a trial's number reads in its colour on white.
TRIAL_COLORS = [*(color for index, color in enumerate(colormaps["tab10"].colors)
                  if index != 3), *colormaps["Dark2"].colors]
# Curve labels: the least height between two in one column (a fraction of the axes), and
# the width of a column (points).
LABEL_GAP = 0.035
LABEL_COLUMN = 12
LEGIBLE = [patheffects.withStroke(linewidth=2.5, foreground="white")]  # over other curves
# Fewer completed trials make importances noise (the issue saw two trials ranked).
MIN_TRIALS_FOR_IMPORTANCES = 10

# How each outcome's learning curve is drawn; failed trials are marked with an "x", and
# a curve cut short (pruned, stopped) ends in a marker where it was cut.
CURVE_STYLES: dict[str, dict[str, object]] = {
    "completed": {"linestyle": "-", "alpha": 0.9},
    "early_stopped": {"linestyle": "-.", "alpha": 0.9},
    "pruned": {"linestyle": "--", "alpha": 0.8, "marker": "v", "markevery": [-1]},
    "stopped_by_user": {"linestyle": ":", "alpha": 0.8, "marker": "s", "markevery": [-1]},
    "running": {"linestyle": "-", "alpha": 0.5},
}
_STATE_OUTCOMES = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned",
                   TrialState.FAIL: "failed", TrialState.RUNNING: "running",
                   TrialState.WAITING: "waiting"}
_PYPLOT = threading.Lock()  # pyplot's figures and styles are process-wide


def trial_outcome(trial: FrozenTrial) -> str:
    """The runner's ``outcome`` attribute, or one read from the state for a trial without it
    (still running, or failed with its worker)."""
    return trial.user_attrs.get("outcome") or _STATE_OUTCOMES[trial.state]


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None


def _reported_label(study: optuna.Study) -> str:
    """What the trials' intermediate values are: the objective, or ``pruner.metric``."""
    reported = study.user_attrs.get(CONFIG_ATTR, {}).get("reported_metric")
    if reported:
        return f"{reported}, reported to the pruner (lower is better)"
    return _objective_label(study)


def _objective_label(study: optuna.Study) -> str:
    metric = study.user_attrs.get(CONFIG_ATTR, {}).get("objective_metric")
    sense = "lower" if study.direction is optuna.study.StudyDirection.MINIMIZE else "higher"
    named = f"{metric}, " if metric else ""
    return f"objective ({named}{sense} is better)"


def _title(fig: Figure, ax: Axes, what: str, study_name: str) -> None:
    """``what`` the figure shows above, the study's name smaller below it, so long names fit."""
    fig.suptitle(what)
    if study_name:
        ax.set_title(study_name, fontsize="small", color="dimgrey")


def _figure(what: str, study_name: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    _title(fig, ax, what, study_name)
    return fig, ax


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _say_empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def _legend(fig: Figure, handles: list, labels: list[str]) -> None:
    """The legend below the axes, where it hides no point or curve."""
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3),
               fontsize="small")


@contextlib.contextmanager
def _optuna_figure() -> Iterator[None]:
    """A scope for one of Optuna's pyplot figures: one at a time, and its style undone.

    Optuna calls its matplotlib plots experimental and warns on each call; they have been
    stable since Optuna 2.2.
    """
    with _PYPLOT, plt.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "No artists with labels found")  # an empty study
        yield


def _optuna_png(ax: Axes, what: str, study_name: str, legend: bool = True) -> bytes:
    """The figure of ``ax``, drawn by Optuna, with this module's size, titles and legend
    (or none); closed."""
    fig = ax.get_figure()
    try:
        ax.set_title("", loc="left")  # Optuna's own, said above instead
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        if legend and ax.get_legend_handles_labels()[1]:
            _legend(fig, *ax.get_legend_handles_labels())
        fig.set_size_inches(*FIGSIZE)
        fig.set_dpi(DPI)
        fig.set_layout_engine("constrained")
        _title(fig, ax, what, study_name)
        return _png(fig)
    finally:
        plt.close(fig)


def learning_curves_png(study: optuna.Study) -> bytes:
    """The objective at every validation of every trial, styled by outcome.

    Every trial is named by its number at the end of its curve (beside its mark when it
    was cut), in a colour of its own (a qualitative palette, which repeats after
    :data:`TRIAL_COLORS`); the legend names the outcomes and the best trial, drawn thick in
    red beneath the other curves' marks. The y axis spans the values after each trial's
    first validation (log-scaled when all are positive), so that the first ones (often
    several times the later values) do not squash the range where trials differ: they
    come in from the edge.
    """
    fig, ax = _figure("Learning curves", study.study_name)
    ax.set_xlabel("validation (one per epoch by default)")
    ax.set_ylabel(_reported_label(study))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    if not trials:
        _say_empty(ax, "no trial has reported a validation yet")
        return _png(fig)

    best = _best_trial(study)
    curves = {trial.number: sorted(trial.intermediate_values.items()) for trial in trials}
    _span_values(ax, list(curves.values()))
    counts: dict[str, int] = {}
    ends: list[tuple[float, float, str, str]] = []  # (x, y, label, colour) of each curve
    for trial in trials:
        outcome = trial_outcome(trial)
        counts[outcome] = counts.get(outcome, 0) + 1
        steps, values = zip(*curves[trial.number], strict=True)
        is_best = best is not None and trial.number == best.number
        color = BEST_COLOR if is_best else TRIAL_COLORS[trial.number % len(TRIAL_COLORS)]
        if outcome == "failed":
            ax.plot(steps[-1], values[-1], marker="x", color=color, linestyle="none",
                    zorder=3)
        elif is_best:  # beneath the others' curves and marks, which it would hide
            ax.plot(steps, values, color=color, linewidth=3, zorder=1.5)
        else:
            ax.plot(steps, values, color=color, linewidth=1.5, zorder=2,
                    **CURVE_STYLES[outcome])
        ends.append((steps[-1], values[-1], str(trial.number), color))
    _label_ends(ax, ends)

    handles = [Line2D([], [], color="grey", linewidth=1.5, **CURVE_STYLES[outcome],
                      label=f"{outcome.replace('_', ' ')} ({counts[outcome]})")
               for outcome in CURVE_STYLES if outcome in counts]
    if "failed" in counts:
        handles.append(Line2D([], [], color="grey", marker="x", linestyle="none",
                              label=f"failed, last value ({counts['failed']})"))
    if best is not None and best.intermediate_values:
        handles.insert(0, Line2D([], [], color=BEST_COLOR, linewidth=3,
                                 label=f"best: trial {best.number} ({best.value:.4g})"))
    _legend(fig, handles, [handle.get_label() for handle in handles])
    ax.grid(alpha=0.3)
    return _png(fig)


def _span_values(ax: Axes, curves: list[list[tuple[int, float]]]) -> None:
    """Fit the y axis to the curves' values after their first validation, and each curve's
    last value; log-scaled when all values are positive."""
    kept = [value for curve in curves for index, (_, value) in enumerate(curve)
            if (index > 0 or index == len(curve) - 1) and math.isfinite(value)]
    if not kept:
        return
    low, high = min(kept), max(kept)
    every = [value for curve in curves for _, value in curve if math.isfinite(value)]
    if min(every) > 0:
        ax.set_yscale("log")
        # Round numbers, written plainly (0.5, not 5×10⁻¹); log ticks alone would be few
        # within a decade.
        ax.yaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 5, 10])
                                   if high < 10 * low else LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        margin = (high / low) ** 0.04 if high > low else 1.1
        ax.set_ylim(low / margin, high * margin)
    else:
        margin = 0.04 * (high - low) or 0.1 * abs(high) or 1.0
        ax.set_ylim(low - margin, high + margin)


def _label_ends(ax: Axes, ends: list[tuple[float, float, str, str]]) -> None:
    """Write each curve's label just right of its end; labels that would overlap (curves
    cut at the same validation, at close values) go in further columns to the right."""
    to_axes = ax.transScale + ax.transLimits  # data -> fractions of the axes
    low, high = sorted(ax.get_ylim())
    columns: dict[float, list[float]] = {}  # by x: the last label's height in each column
    for x, y, label, color in sorted(ends, key=lambda end: (end[0], end[1])):
        height = to_axes.transform((x, min(max(y, low), high)))[1]
        placed = columns.setdefault(x, [])
        column = next((k for k, last in enumerate(placed) if height - last >= LABEL_GAP),
                      len(placed))
        if column == len(placed):
            placed.append(height)
        placed[column] = height
        ax.annotate(label, (x, min(max(y, low), high)), xytext=(5 + LABEL_COLUMN * column, 0),
                    textcoords="offset points", va="center", fontsize="x-small", color=color,
                    annotation_clip=False, zorder=4, path_effects=LEGIBLE)


def optimization_history_png(study: optuna.Study) -> bytes:
    """Optuna's optimization history: each completed trial's value and the best so far,
    plus the last value of each pruned trial and a star on the best trial."""
    with _optuna_figure():
        ax = optuna_plots.plot_optimization_history(study, target_name=_objective_label(study))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
                  if t.intermediate_values]
        if pruned:
            ax.scatter([t.number for t in pruned],
                       [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                       marker="v", facecolors="none", edgecolors="dimgrey",
                       label="pruned or stopped (last value)")
        best = _best_trial(study)
        if best is not None:
            ax.scatter([best.number], [best.value], marker="*", s=250, color=BEST_COLOR,
                       zorder=3, label=f"best: trial {best.number} ({best.value:.4g})")
        if not ax.has_data():
            _say_empty(ax, "no trial has completed yet")
        return _optuna_png(ax, "Optimization history", study.study_name)


def anytime_png(study: optuna.Study) -> bytes:
    """The study's best value against the compute it has spent (anytime performance).

    Compute is counted in validations (epochs, by default) of every ended trial, in the
    order they ended: a pruned trial costs its few epochs, a full one all of them. Each
    completed trial is a dot, each pruned or stopped one a mark on the axis of compute.
    """
    fig, ax = _figure("Best value against compute spent", study.study_name)
    ax.set_xlabel("validations spent by the trials so far (epochs, by default)")
    ax.set_ylabel(_objective_label(study))
    ended = sorted((t for t in study.get_trials(deepcopy=False)
                    if t.datetime_complete is not None),
                   key=lambda t: t.datetime_complete)
    minimize = study.direction is optuna.study.StudyDirection.MINIMIZE
    spent, best, steps, bests, dots, marks = 0, None, [0], [math.nan], [], []
    for trial in ended:
        spent += len(trial.intermediate_values)
        if trial.state is TrialState.COMPLETE and math.isfinite(trial.value):
            dots.append((spent, trial.value))
            if best is None or (trial.value < best if minimize else trial.value > best):
                best = trial.value
        else:
            marks.append(spent)
        steps.append(spent)
        bests.append(math.nan if best is None else best)
    if not dots:
        _say_empty(ax, "no trial has completed yet")
        return _png(fig)
    ax.step(steps, bests, where="post", color=BEST_COLOR, linewidth=2, label="best so far")
    ax.scatter(*zip(*dots, strict=True), color="steelblue", zorder=3, s=18,
               label=f"completed trial ({len(dots)})")
    if marks:
        ax.plot(marks, [0] * len(marks), "|", color="dimgrey", markersize=12,
                transform=ax.get_xaxis_transform(), clip_on=False,
                label=f"pruned, stopped or failed ({len(marks)})")
    _legend(fig, *ax.get_legend_handles_labels())
    ax.grid(alpha=0.3)
    return _png(fig)


def importances_unavailable(study: optuna.Study) -> str | None:
    """Why the study's parameter importances would be noise, or None when they are not."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < MIN_TRIALS_FOR_IMPORTANCES:
        return (f"{len(done)} trials completed; importances need at least "
                f"{MIN_TRIALS_FOR_IMPORTANCES}, fewer are noise")
    if not _varying_params(done):
        return "no searched parameter took more than one value"
    if len({t.value for t in done}) < 2:
        return "every completed trial has the same value: there is nothing to explain"
    return None


def _varying_params(trials: list[FrozenTrial]) -> list[str]:
    return sorted(name for name in {n for t in trials for n in t.params}
                  if len({repr(t.params.get(name)) for t in trials}) > 1)


def param_importances_png(study: optuna.Study) -> bytes | None:
    """Optuna's parameter importances (its default evaluator, PED-ANOVA, as in
    optuna-dashboard) of the parameters that varied; None when
    :func:`importances_unavailable` says why not."""
    if importances_unavailable(study) is not None:
        return None
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with _optuna_figure():
        ax = optuna_plots.plot_param_importances(study, params=_varying_params(done))
        # No legend: it would name the objective, the only one.
        return _optuna_png(ax, f"Parameter importances ({len(done)} completed trials)",
                           study.study_name, legend=False)


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
    fig, ax = _figure(f"Trial {trial.number}: attention alignment at epoch {epoch}", study_name)
    draw_alignment(ax, np.load(path))
    return _png(fig)
