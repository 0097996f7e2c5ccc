"""Read-only views of a study for people: status, best trial, the trial list.

Everything here is computed from the storage alone, so the CLI, the bot and a
remote machine all see the same thing. Values are plain JSON-able dicts.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tuner_core.storage.attributes import (
    BUDGET_ATTR,
    CONFIRMS_ATTR,
    CREATED_ATTR,
    END_REASON_ATTR,
    FINISHED_ATTR,
    LISTENING_ATTR,
    REQUIREMENTS_ATTR,
    STOP_ATTR,
    Outcome,
)
from tuner_core.storage.confirmations import confirmed_best
from tuner_core.study.life import trials_left

# What a trial came to, in the words people read (the CLI's; the bot words its own), in
# the order they are listed: a trial that has ended by its ``outcome``, one that has not
# by its state. A stopped trial is PRUNED for Optuna, but it was not judged: it is
# "stopped", never "pruned".
OUTCOME_WORDS = {"running": "running", "waiting": "waiting", Outcome.COMPLETED: "complete",
                 Outcome.EARLY_STOPPED: "stopped early", Outcome.PRUNED: "pruned",
                 Outcome.STOPPED_BY_USER: "stopped", Outcome.FAILED: "failed"}
_ENDED_WITHOUT_OUTCOME = {TrialState.COMPLETE: Outcome.COMPLETED,
                          TrialState.PRUNED: Outcome.PRUNED, TrialState.FAIL: Outcome.FAILED}


def trial_outcome(trial: FrozenTrial) -> str:
    """A key of :data:`OUTCOME_WORDS`: the ``outcome`` of a trial that has ended (one
    without, as a trial failed for a lost worker, by its state), else ``running`` or
    ``waiting`` (a queued trial may carry another's attributes: a retry, its original's)."""
    if not trial.state.is_finished():
        return trial.state.name.lower()
    outcome = trial.user_attrs.get("outcome")
    return outcome if outcome in OUTCOME_WORDS else _ENDED_WITHOUT_OUTCOME[trial.state]


def outcome_counts(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """How many trials came to each outcome (:func:`trial_outcome`), in the order of
    :data:`OUTCOME_WORDS`; an outcome no trial came to is left out."""
    counted = Counter(trial_outcome(trial) for trial in trials)
    return {outcome: counted[outcome] for outcome in OUTCOME_WORDS if counted[outcome]}


def outcomes_in_words(outcomes: dict[str, int]) -> str:
    """``complete 2, stopped 1``: counts by outcome as the CLI shows them."""
    return ", ".join(f"{OUTCOME_WORDS.get(key, key)} {count}"
                     for key, count in outcomes.items() if count) or "none"


def study_state(study: optuna.Study) -> str:
    """``running``, ``stopping`` (requested, not yet done) or ``finished``."""
    attrs = study.user_attrs
    if attrs.get(FINISHED_ATTR):
        return "finished"
    return "stopping" if attrs.get(STOP_ATTR) else "running"


def _duration(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None:
        return None
    end = trial.datetime_complete.timestamp() if trial.datetime_complete else time.time()
    return end - trial.datetime_start.timestamp()


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as the CLI and the bot list it."""
    attrs = trial.user_attrs
    listening = attrs.get(LISTENING_ATTR)
    return {
        "number": trial.number,
        "state": trial.state.name,
        "outcome": attrs.get("outcome"),
        "confirms": attrs.get(CONFIRMS_ATTR),  # the trial it trains again with another seed
        "value": trial.value,
        "params": trial.params,
        "criterion": attrs.get("criterion"),
        "reason": attrs.get("reason"),
        "recommendation": attrs.get("recommendation"),
        "stop_epoch": attrs.get("stop_epoch"),
        "adaptations": attrs.get("adaptations", []),
        "last_metrics": attrs.get("last_metrics"),
        "duration_s": _duration(trial),
        "run_dir": attrs.get("run_dir"),
        "best_checkpoint": attrs.get("best_checkpoint"),
        "exit_code": attrs.get("exit_code"),
        "log_tail": attrs.get("log_tail"),
        # Its listening evaluation (tuner_core.trial.evaluation), two of its numbers apart.
        "listening": listening,
        "cer_ratio": (listening or {}).get("cer_ratio"),
        "mcd": (listening or {}).get("mcd"),
        "requirements_unmet": attrs.get(REQUIREMENTS_ATTR),
    }


def listening_line(listening: dict[str, Any] | None) -> str:
    """A trial's listening evaluation in one line, as the CLI, the report and the bot show it."""
    if listening is None:
        return "not evaluated as a listener would (yet)"
    parts = []
    if listening.get("stopped") is not None:
        parts.append(f"gate stopped {listening['stopped']}/{listening['sentences']}")
    parts.append(f"length {listening['length_ratio']:.2f}")
    if listening.get("cer") is not None:
        parts.append(f"CER {listening['cer']:.2f} (recordings {listening['cer_reference']:.2f}, "
                     f"ratio {listening['cer_ratio']:.2f})")
    parts.append(f"MCD {listening['mcd']:.1f} dB")
    for fault in ("skipped", "repeated"):
        if listening.get(fault) is not None:
            words = "; ".join(listening.get(f"{fault}_words", {}).values())
            parts.append(f"{fault} words in {listening[fault]}" + (f" ({words})" if words else ""))
    return ", ".join(parts) + f" [{listening.get('judged_on', 'held-out sentences')}]"


def best_trial(study: optuna.Study) -> dict[str, Any] | None:
    """The study's champion, or None while no trial has completed.

    Once its confirmation over training seeds has ended (``optimization.confirm``), the
    trial of the configuration with the best mean, with ``confirmation``: ``mean``, ``std``,
    ``seeds``, ``trials``; until then, and without confirmation, the best completed trial,
    with ``confirmation`` None.
    """
    trials = study.get_trials(deepcopy=False)
    confirmed = confirmed_best(trials, study.direction is StudyDirection.MINIMIZE)
    if confirmed is not None:
        return trial_row(trials[confirmed.trial]) | {"confirmation": confirmed.as_dict()}
    try:
        return trial_row(study.best_trial) | {"confirmation": None}
    except ValueError:
        return None


def study_status(study: optuna.Study) -> dict[str, Any]:
    """Counts by state (``counts``, Optuna's) and by outcome (``outcomes``, what people
    read: see :func:`outcome_counts`), the best value, running trials and a time estimate."""
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    attrs = study.user_attrs
    created = attrs.get(CREATED_ATTR, time.time())
    end = attrs.get(FINISHED_ATTR) or time.time()
    finished = [d for t in trials if t.state.is_finished() and (d := _duration(t)) is not None]
    left = max(trials_left(study), 0) + counts["WAITING"]
    running = [trial_row(t) for t in trials if t.state is TrialState.RUNNING]
    best = best_trial(study)
    return {
        "study_name": study.study_name,
        "state": study_state(study),
        "end_reason": attrs.get(END_REASON_ATTR),
        "direction": study.direction.name.lower(),
        "n_trials": attrs.get(BUDGET_ATTR),
        "counts": counts,
        "outcomes": outcome_counts(trials),
        "best_value": best["value"] if best else None,
        "best_trial": best["number"] if best else None,
        "running": running,
        "elapsed_s": end - created,
        # Remaining trials at the mean duration so far, the running ones counted as whole.
        "eta_s": (statistics.fmean(finished) * (left + len(running))
                  if finished and study_state(study) == "running" else None),
    }


def trials_list(study: optuna.Study, limit: int | None = None) -> list[dict[str, Any]]:
    """The last ``limit`` trials (all by default), oldest first."""
    trials = study.get_trials(deepcopy=False)
    if limit:
        trials = trials[-limit:]
    return [trial_row(t) for t in trials]


def confirmation_line(confirmation: dict[str, Any] | None) -> str:
    """Whether a champion (``best_trial``) is confirmed over seeds, in words."""
    if confirmation is None:
        return "not confirmed: one training seed (optimization.confirm trains it again)"
    trials = ", ".join(str(number) for number in confirmation["trials"])
    return (f"confirmed over {confirmation['seeds']} training seeds: mean "
            f"{confirmation['mean']:.4f} ± {confirmation['std']:.4f} (trials {trials})")


def result_summary(study: optuna.Study) -> dict[str, Any]:
    """What ``SmartTuner.run_optimization`` returns: ``states`` counts the trials by
    Optuna's state, ``outcomes`` by outcome (a stopped trial is PRUNED, but "stopped")."""
    status = study_status(study)
    best = best_trial(study)
    return {
        "study_name": study.study_name,
        "best_parameters": best["params"] if best else {},
        "best_value": best["value"] if best else None,
        "best_trial": best["number"] if best else None,
        "confirmation": best["confirmation"] if best else None,
        "n_trials": sum(status["counts"].values()),
        "states": {k: v for k, v in status["counts"].items() if v},
        "outcomes": status["outcomes"],
        "end_reason": status["end_reason"],
    }


def studies_list(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """Every study in the storage, oldest first, with its progress."""
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=True):
        rows.append({
            "study_name": summary.study_name,
            "n_trials": summary.n_trials,
            "budget": summary.user_attrs.get(BUDGET_ATTR),
            "best_value": summary.best_trial.value if summary.best_trial else None,
            "created_at": summary.user_attrs.get(CREATED_ATTR),
            "finished": bool(summary.user_attrs.get(FINISHED_ATTR)),
        })
    return sorted(rows, key=lambda row: row["created_at"] or 0)
