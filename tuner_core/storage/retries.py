"""Which trials retry which: the records Optuna's heartbeat retry leaves on a trial.

When a worker dies mid-trial, another worker fails that trial once its heartbeat
is stale, and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` queues a
copy of it (same parameters and user attributes) that names the original.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

# Told of each trial whose worker died, once Optuna has failed it: the study, the trial,
# and the number of the trial that retries it (None when its retries are used up).
OnLost = Callable[[optuna.Study, FrozenTrial, int | None], None]


class _RetryAndTell(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a trial whose worker died, then ``on_lost``."""

    def __init__(self, max_retry: int, on_lost: OnLost):
        super().__init__(max_retry=max_retry)
        self._on_lost = on_lost

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        super().__call__(study, trial)
        retry = next((t.number for t in reversed(study.get_trials(deepcopy=False))
                      if _quietly(self.retry_history, t)[-1:] == [trial.number]), None)
        self._on_lost(study, trial, retry)


def retry_callback(max_retry: int, on_lost: OnLost) -> RetryHeartbeatStaleTrialCallback:
    return _quietly(_RetryAndTell, max_retry=max_retry, on_lost=on_lost)


def lost_predecessor(trial: FrozenTrial) -> int | None:
    """The number of the trial whose death ``trial`` retries (the last one, for a retry of
    a retry), or None."""
    history = _quietly(RetryHeartbeatStaleTrialCallback.retry_history, trial)
    return history[-1] if history else None


def retried_from(trial: FrozenTrial) -> int | None:
    """The number of the trial that ``trial`` retries, or None."""
    return _quietly(RetryHeartbeatStaleTrialCallback.retried_trial_number, trial)


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the trials that were retried by a later one."""
    return {number for trial in trials
            for number in _quietly(RetryHeartbeatStaleTrialCallback.retry_history, trial)}


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the trials whose worker stopped beating, which queues their retries."""
    _quietly(optuna.storages.fail_stale_trials, study)


def _quietly(function, *args, **kwargs):
    # The heartbeat retry API works as documented but is still flagged experimental;
    # the warning on every call would drown the real ones.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return function(*args, **kwargs)
