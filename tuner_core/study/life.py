"""A study's life in the storage: created (or resumed) with its budget, loaded, asked to
stop, counted, and marked finished by the last worker to leave.

The names it keeps on the study are in :mod:`tuner_core.storage.attributes`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner_core.config.sections import Config
from tuner_core.errors import StudyNotFound
from tuner_core.storage.attributes import (
    BUDGET_ATTR,
    CONFIG_ATTR,
    CREATED_ATTR,
    END_REASON_ATTR,
    FINISHED_ATTR,
    STOP_ATTR,
)
from tuner_core.storage.opening import open_storage, storage_exists
from tuner_core.storage.retries import retried_numbers
from tuner_core.study.pruner import make_pruner
from tuner_core.study.sampler import make_sampler

log = logging.getLogger(__name__)

ACTIVE_STATES = (TrialState.RUNNING, TrialState.WAITING)


def default_study_name(config: Config) -> str:
    """``EXPERIMENT-YYYYmmdd-HHMMSS-mmm-xxxx``: the time to the millisecond and a random
    suffix, so that two studies started in the same instant have names of their own."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{config.experiment_name}-{stamp}-{int(now % 1 * 1000):03d}-{secrets.token_hex(2)}"


# Attempts at a default name that no study has: two clash only when made in the same
# millisecond with the same one of 65536 suffixes.
DEFAULT_NAME_ATTEMPTS = 3


def create_study(config: Config, name: str | None = None,
                 n_trials: int | None = None) -> optuna.Study:
    """Create the study ``name`` or resume it; ``n_trials`` (the total) becomes its budget.

    Without a ``name`` the study is new, with :func:`default_study_name`: it never joins a
    study that another caller created.
    """
    settings = {"storage": open_storage(config), "direction": config.optimization.direction,
                "sampler": make_sampler(config.optimization),
                "pruner": make_pruner(config.optimization)}
    study = (optuna.create_study(study_name=name, load_if_exists=True, **settings)
             if name is not None else _new_default_study(config, settings))
    attrs = study.user_attrs
    if CREATED_ATTR not in attrs:
        study.set_user_attr(CREATED_ATTR, time.time())
        study.set_user_attr(CONFIG_ATTR, {
            "experiment_name": config.experiment_name,
            "objective_metric": config.optimization.objective_metric,
            # What the trials' intermediate values are: the objective, or pruner.metric.
            "reported_metric": config.optimization.pruner.metric,
            "direction": config.optimization.direction,
            "search_space": {k: v.model_dump(mode="json")
                             for k, v in config.hyperparameter_search_space.items()},
            "fixed_hparams": config.fixed_hparams,
        })
    if n_trials is not None or BUDGET_ATTR not in attrs:
        study.set_user_attr(BUDGET_ATTR, n_trials or config.optimization.n_trials)
    if FINISHED_ATTR in attrs:  # resuming a finished or stopped study reopens it
        for key in (FINISHED_ATTR, END_REASON_ATTR, STOP_ATTR):
            study.set_user_attr(key, None)
    return study


def _new_default_study(config: Config, settings: dict[str, Any]) -> optuna.Study:
    """A new study with a default name; never one that exists already."""
    for _ in range(DEFAULT_NAME_ATTEMPTS - 1):
        with contextlib.suppress(optuna.exceptions.DuplicatedStudyError):
            return optuna.create_study(study_name=default_study_name(config),
                                       load_if_exists=False, **settings)
    # The last attempt: a clash again raises DuplicatedStudyError.
    return optuna.create_study(study_name=default_study_name(config), load_if_exists=False,
                               **settings)


def load_study(config: Config, name: str) -> optuna.Study:
    """The existing study ``name``, with the configured sampler and pruner.

    A SQLite storage that does not exist yet is not created: it has no study.
    """
    if not storage_exists(config):
        raise StudyNotFound(f"no study named {name!r}: {config.storage_shown} does not exist")
    storage = open_storage(config)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if name not in names:
        known = ", ".join(names[-10:]) or "none yet"
        raise StudyNotFound(f"no study named {name!r} in {config.storage_shown} (known: {known})")
    return optuna.load_study(study_name=name, storage=storage,
                             sampler=make_sampler(config.optimization),
                             pruner=make_pruner(config.optimization))


def request_stop(study: optuna.Study, by: str) -> None:
    """Ask every worker of ``study`` to stop its trial gracefully and leave."""
    study.set_user_attr(STOP_ATTR, {"at": time.time(), "by": by})


def stop_requested(study: optuna.Study) -> bool:
    """Read afresh from the storage, so a request from another process is seen."""
    return bool(study.user_attrs.get(STOP_ATTR))


def trials_left(study: optuna.Study) -> int:
    """Budget minus trials finished, running or queued; a trial that was retried counts once."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    used = sum(1 for t in trials if t.number not in retried)
    return study.user_attrs.get(BUDGET_ATTR, 0) - used


def mark_finished_if_last(study: optuna.Study) -> bool:
    """Record the study's end unless a worker is still busy (it will) or another one
    has already recorded it; whether this call did."""
    if (study.user_attrs.get(FINISHED_ATTR)  # None after a resume reopened the study
            or study.get_trials(deepcopy=False, states=ACTIVE_STATES)):
        return False
    reason = "stopped on request" if stop_requested(study) else "all trials done"
    study.set_user_attr(END_REASON_ATTR, reason)
    study.set_user_attr(FINISHED_ATTR, time.time())
    log.info("study %s finished: %s", study.study_name, reason)
    return True
