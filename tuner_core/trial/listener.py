"""What a trial's observers hear: :class:`TrialListener` hooks, several heard as one.

Progress bars, MLflow tracking, the model registry and checkpoint retention each listen to
the trials a worker runs; the runner calls them in order and knows none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna


class TrialListener:
    """Hooks for progress bars and tracking; every method is optional."""

    def trial_started(self, trial: optuna.Trial, hparams: dict[str, Any], run_dir: Path) -> None:
        """A trial is about to start its first trainer."""

    def trainer_event(self, trial: optuna.Trial, event: dict[str, Any],
                      objective: float | None) -> None:
        """Any trainer event; ``objective`` is set for validations."""

    def trial_adapted(self, trial: optuna.Trial, adaptation: dict[str, Any]) -> None:
        """The trainer is being restarted with corrected hyperparameters."""

    def trial_finished(self, trial: optuna.Trial, state: optuna.trial.TrialState,
                       value: float | None, attrs: dict[str, Any]) -> None:
        """The trial's final state, value and user attributes are known.

        Called from inside the objective, just before Optuna records the state, so
        ``trial.study.best_value`` does not include this trial yet.
        """

    def artifact_rendered(self, trial_number: int, path: Path) -> None:
        """A plot or sample of a finished trial, drawn afterwards (tuner_core.trial.rendering)."""

    def study_finished(self, study: optuna.Study) -> None:
        """The study's budget is used or it was stopped, and no trial is running."""


class ListenerGroup(TrialListener):
    """Several listeners heard as one, in order."""

    def __init__(self, *listeners: TrialListener | None):
        self.listeners = [listener for listener in listeners if listener is not None]

    def trial_started(self, *args: Any) -> None:
        for listener in self.listeners:
            listener.trial_started(*args)

    def trainer_event(self, *args: Any) -> None:
        for listener in self.listeners:
            listener.trainer_event(*args)

    def trial_adapted(self, *args: Any) -> None:
        for listener in self.listeners:
            listener.trial_adapted(*args)

    def trial_finished(self, *args: Any) -> None:
        for listener in self.listeners:
            listener.trial_finished(*args)

    def artifact_rendered(self, *args: Any) -> None:
        for listener in self.listeners:
            listener.artifact_rendered(*args)

    def study_finished(self, *args: Any) -> None:
        for listener in self.listeners:
            listener.study_finished(*args)


def is_new_best(study: optuna.Study, value: float, first: bool = True) -> bool:
    """Whether ``value`` beats every complete trial of ``study`` so far; ``first`` when
    no trial has completed yet."""
    try:
        best = study.best_value
    except ValueError:
        return first
    minimize = study.direction.name == "MINIMIZE"
    return value < best if minimize else value > best
