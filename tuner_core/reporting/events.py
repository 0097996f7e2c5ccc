"""The notification feed: what happened in a storage's studies, as ordered, stable events.

A front end (the Telegram bot) learns what happened by reading the study storage, not
through callbacks from the workers, so news from any worker on any machine arrives the
same way, and a restarted front end neither loses nor repeats any. To make that work
each :class:`Notification` has an id that the same event gets on every read:

==============================  ====================  ===================================
id                              kind (the switch)     when
==============================  ====================  ===================================
``study:<s>:started``           training_start        the study was created
``trial:<s>:<n>:adapt:<i>``     restarts              its i-th restart, corrected values
``trial:<s>:<n>:anomaly:<i>``   anomalies             the i-th of its ``anomalies``
``trial:<s>:<n>:finished``      trial_complete,       it ended: completed; pruned or
                                early_stop or         stopped early; failed
                                error_alerts
``trial:<s>:<n>:best``          optimization_updates  it beat every earlier trial
``study:<s>:finished``          training_complete     the last worker left the study
==============================  ====================  ===================================

The kinds are the keys of ``telegram.notifications`` in the config; which are switched
on is the front end's business. Nothing here knows about Telegram.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tuner_core.reporting.advice import split_by_search_space
from tuner_core.reporting.summary import outcome_counts
from tuner_core.rules.search_space import SEARCH_RANGE_TYPES, describe
from tuner_core.storage.attributes import (
    BUDGET_ATTR,
    CONFIG_ATTR,
    CONFIRMS_ATTR,
    CREATED_ATTR,
    END_REASON_ATTR,
    FINISHED_ATTR,
    LISTENING_ATTR,
    REQUIREMENTS_ATTR,
)
from tuner_core.storage.retries import retried_numbers

LOG_TAIL_CHARS = 1500  # of a failed trainer's log, enough to diagnose, short enough to read


class Kind(StrEnum):
    """What a notification is about; each value is a switch of ``telegram.notifications``."""

    TRAINING_START = "training_start"
    TRIAL_COMPLETE = "trial_complete"
    EARLY_STOP = "early_stop"
    ERROR_ALERTS = "error_alerts"
    RESTARTS = "restarts"
    ANOMALIES = "anomalies"
    OPTIMIZATION_UPDATES = "optimization_updates"
    TRAINING_COMPLETE = "training_complete"


@dataclass(frozen=True)
class Notification:
    """One event of one study; ``facts`` holds what a message about it needs (JSON-able)."""

    id: str
    kind: Kind
    study: str
    facts: dict[str, Any] = field(default_factory=dict)


def collect(storage: optuna.storages.BaseStorage, delivered: set[str]) -> list[Notification]:
    """Every notification of every study in ``storage`` whose id is not in ``delivered``.

    Studies in the order they were created; within a study, its start, then trial by
    trial (restarts, anomalies, the end, a new best), then its end. The order comes from
    the storage, not from clocks, which may differ between the machines of a study.
    A finished study whose end was delivered is not read again; a study still being
    created has no news yet.
    """
    return [notification
            for summary in optuna.get_all_study_summaries(storage)
            if _created(summary) and not _done(summary, delivered)
            for notification in _study_notifications(storage, summary)
            if notification.id not in delivered]


def finished_studies_backlog(storage: optuna.storages.BaseStorage) -> set[str]:
    """The ids of all notifications of the studies that have already finished.

    A front end that starts for the first time on an old storage marks these delivered,
    so the chat hears about studies still running, not about months of history.
    """
    return {notification.id
            for summary in optuna.get_all_study_summaries(storage)
            if summary.user_attrs.get(FINISHED_ATTR)
            for notification in _study_notifications(storage, summary)}


def _created(summary: optuna.study.StudySummary) -> bool:
    # create_study makes the Optuna study first and writes these attributes after it;
    # read in between, the study's start would be told without its budget and settings.
    return BUDGET_ATTR in summary.user_attrs and CONFIG_ATTR in summary.user_attrs


def _done(summary: optuna.study.StudySummary, delivered: set[str]) -> bool:
    # A resumed study loses its finished mark, so it is read again.
    return bool(summary.user_attrs.get(FINISHED_ATTR)) and (
        f"study:{summary.study_name}:finished" in delivered)


def _study_notifications(storage: optuna.storages.BaseStorage,
                         summary: optuna.study.StudySummary) -> Iterator[Notification]:
    name, attrs = summary.study_name, summary.user_attrs
    trials = storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False)
    yield _started(name, attrs)
    search_space = ((attrs.get(CONFIG_ATTR) or {}).get("search_space") or {}).keys()
    minimize = summary.direction == StudyDirection.MINIMIZE
    retried = retried_numbers(trials)
    best: FrozenTrial | None = None
    for trial in trials:
        yield from _adaptations(name, trial)
        yield from _anomalies(name, trial)
        if not trial.state.is_finished():
            continue
        previous = best
        if trial.state is TrialState.COMPLETE and _better(trial.value, best, minimize):
            best = trial
        yield _trial_finished(name, trial, new_best=best is trial,
                              retried=trial.number in retried, search_space=search_space)
        if best is trial:
            yield _new_best(name, trial, previous)
    if attrs.get(FINISHED_ATTR):
        yield _study_finished(name, attrs, trials, best)


def study_started_id(study: str) -> str:
    """The id of the notification that ``study`` started (a front end that announced the
    study itself may count it as delivered)."""
    return f"study:{study}:started"


def _started(name: str, attrs: dict[str, Any]) -> Notification:
    config = attrs.get(CONFIG_ATTR) or {}
    space = {key: SEARCH_RANGE_TYPES[entry["type"]].model_validate(entry)
             for key, entry in (config.get("search_space") or {}).items()}
    return Notification(study_started_id(name), Kind.TRAINING_START, name, {
        "budget": attrs.get(BUDGET_ATTR),
        "objective_metric": config.get("objective_metric"),
        "direction": config.get("direction"),
        "search_space": describe(space),
        "fixed_hparams": config.get("fixed_hparams") or {},
    })


def _adaptations(study: str, trial: FrozenTrial) -> Iterator[Notification]:
    for index, adaptation in enumerate(trial.user_attrs.get("adaptations") or []):
        yield Notification(
            f"trial:{study}:{trial.number}:adapt:{index}", Kind.RESTARTS, study, {
                "trial": trial.number, "restart": index + 1,
                "epoch": adaptation.get("epoch"), "criterion": adaptation.get("criterion"),
                "reason": adaptation.get("reason"),
                "changes": {key: list(change) for key, change in
                            (adaptation.get("changes") or {}).items()},
            })


def _anomalies(study: str, trial: FrozenTrial) -> Iterator[Notification]:
    for index, anomaly in enumerate(trial.user_attrs.get("anomalies") or []):
        yield Notification(f"trial:{study}:{trial.number}:anomaly:{index}", Kind.ANOMALIES,
                           study, {"trial": trial.number, **anomaly})


def _trial_finished(study: str, trial: FrozenTrial, new_best: bool, retried: bool,
                    search_space: Collection[str]) -> Notification:
    attrs = trial.user_attrs
    recommendation = attrs.get("recommendation") or ""
    outcome = attrs.get("outcome")
    if trial.state is TrialState.FAIL:
        kind = Kind.ERROR_ALERTS
    elif outcome in ("pruned", "early_stopped"):
        kind = Kind.EARLY_STOP
    else:
        kind = Kind.TRIAL_COMPLETE
    log_tail = attrs.get("log_tail") or ""
    return Notification(f"trial:{study}:{trial.number}:finished", kind, study, {
        "trial": trial.number,
        "state": trial.state.name,
        # A trial failed without an outcome lost its worker (see tuner_core.storage.retries).
        "outcome": outcome or ("worker_lost" if trial.state is TrialState.FAIL else None),
        # Optuna keeps a pruned trial's last intermediate value as its value; it is no
        # result (the trial is not ranked), so the news has none.
        "value": trial.value if trial.state is TrialState.COMPLETE else None,
        "new_best": new_best,
        "retried": retried,
        "duration_s": (trial.datetime_complete - trial.datetime_start).total_seconds()
        if trial.datetime_start and trial.datetime_complete else None,
        "params": trial.params,
        "criterion": attrs.get("criterion"),
        "reason": attrs.get("reason"),
        "recommendation": recommendation,
        # The hyperparameters it names: {"searched": [...], "in_config": [...]}.
        "advice": split_by_search_space(recommendation, search_space),
        "stop_epoch": attrs.get("stop_epoch"),
        "confirms": attrs.get(CONFIRMS_ATTR),
        "exit_code": attrs.get("exit_code"),
        "log_tail": log_tail[-LOG_TAIL_CHARS:],
    })


def _new_best(study: str, trial: FrozenTrial, previous: FrozenTrial | None) -> Notification:
    return Notification(
        f"trial:{study}:{trial.number}:best", Kind.OPTIMIZATION_UPDATES, study, {
            "trial": trial.number, "value": trial.value, "params": trial.params,
            "previous_value": previous.value if previous else None,
            "previous_trial": previous.number if previous else None,
            # Its listening evaluation, when it waited for it (registry.requirements or a
            # listened objective), and the requirements it fails (then not registered).
            "listening": trial.user_attrs.get(LISTENING_ATTR),
            "requirements_unmet": trial.user_attrs.get(REQUIREMENTS_ATTR),
        })


def _study_finished(study: str, attrs: dict[str, Any], trials: list[FrozenTrial],
                    best: FrozenTrial | None) -> Notification:
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    created, finished = attrs.get(CREATED_ATTR), attrs[FINISHED_ATTR]
    return Notification(f"study:{study}:finished", Kind.TRAINING_COMPLETE, study, {
        "end_reason": attrs.get(END_REASON_ATTR),
        "counts": counts,  # by Optuna's state
        # By outcome, what the chat reads: a stopped trial is PRUNED, but "stopped".
        "outcomes": outcome_counts(trials),
        "elapsed_s": finished - created if created else None,
        "best_trial": best.number if best else None,
        "best_value": best.value if best else None,
        "best_params": best.params if best else {},
    })


def _better(value: float | None, best: FrozenTrial | None, minimize: bool) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None or best.value is None:
        return True
    return value < best.value if minimize else value > best.value
