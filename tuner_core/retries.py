"""Which trials retry which: the records Optuna's heartbeat retry leaves on a trial.

When a worker dies mid-trial, another worker fails that trial once its heartbeat
is stale, and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` queues a
copy of it (same parameters and user attributes) that names the original.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial


def retry_callback(max_retry: int) -> RetryHeartbeatStaleTrialCallback:
    return _quietly(RetryHeartbeatStaleTrialCallback, max_retry=max_retry)


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
