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
from matplotlib import colormaps
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import matplotlib as optuna_plots

from train.tacotron2.figures import draw_alignment
from tuner_core.storage.attributes import CONFIG_ATTR

FIGSIZE = (8, 5)
DPI = 100
BEST_COLOR = "crimson"
# Viridis without its palest yellows, which vanish on white.
TRIAL_COLORMAP = ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.85, 256)))
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

    Colour is the trial number (a colour bar, not a legend entry per trial, so 50
    trials stay readable); the legend names the outcomes, and the best trial is
    drawn thick in red and labelled.
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
    norm = Normalize(0, max(t.number for t in trials) or 1)
    counts: dict[str, int] = {}
    for trial in trials:
        outcome = trial_outcome(trial)
        counts[outcome] = counts.get(outcome, 0) + 1
        steps, values = zip(*sorted(trial.intermediate_values.items()), strict=True)
        color = TRIAL_COLORMAP(norm(trial.number))
        if outcome == "failed":
            ax.plot(steps[-1], values[-1], marker="x", color=color, linestyle="none")
        elif best is None or trial.number != best.number:
            ax.plot(steps, values, color=color, linewidth=1.5, **CURVE_STYLES[outcome])

    handles = [Line2D([], [], color="grey", linewidth=1.5, **CURVE_STYLES[outcome],
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
    _legend(fig, handles, [handle.get_label() for handle in handles])
    colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap=TRIAL_COLORMAP), ax=ax,
                            label="trial number")
    colorbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return _png(fig)


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
