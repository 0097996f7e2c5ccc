"""Retention keeps the disk in check: after each trial, only the top ``registry.keep_top_k``
complete trials of the study keep their checkpoints (``*.pt`` in their run folders).

Trials with a registered version (the champion among them) keep theirs; so do trials still
running, failed trials whose retry will resume from their last checkpoint, and trials
stopped on request. Any other failed trial keeps its last checkpoint (``last.pt`` and its
fallback), to be resumed by hand, and its best one (``best.pt``, and ``best_checkpoint``
points at it still): a trainer that crashed late, on a full disk say, may have trained a
model worth keeping. A trial whose best checkpoint is deleted has its
``best_checkpoint`` attribute cleared: no attribute points at a deleted file.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tuner_core.config.sections import Config
from tuner_core.storage.attributes import VERSION_ATTR, Outcome
from tuner_core.storage.opening import open_storage
from tuner_core.storage.records import amend_user_attrs
from tuner_core.storage.retries import retried_from
from tuner_core.trial.listener import TrialListener

log = logging.getLogger(__name__)

# The trainer's last checkpoint and its fallback (train.tacotron2.checkpoint.previous_path).
RESUMABLE = ("last.pt", "last.prev.pt")
# What a failed trial keeps: those, and its best checkpoint.
KEPT_BY_FAILED = (*RESUMABLE, "best.pt")


def enforce_retention(config: Config, study: optuna.Study,
                      finishing: FrozenTrial | None = None) -> list[Path]:
    """Delete the checkpoints of trials outside the top ``registry.keep_top_k``; the files.

    ``finishing`` is a trial as it is about to be recorded: listeners hear of a trial's
    end just before Optuna stores its state.
    """
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    if finishing is not None:
        trials[finishing.number] = finishing
    complete = sorted((t for t in trials.values() if t.state is TrialState.COMPLETE),
                      key=lambda t: t.value, reverse=study.direction is StudyDirection.MAXIMIZE)
    active = [t for t in trials.values() if not t.state.is_finished()]
    keep = {t.number for t in complete[:config.registry.keep_top_k]}
    keep |= {t.number for t in trials.values() if VERSION_ATTR in t.user_attrs}
    # A trial stopped on request was not judged; its owner may resume it by hand.
    keep |= {t.number for t in trials.values()
             if t.user_attrs.get("outcome") == Outcome.STOPPED_BY_USER}
    keep |= {t.number for t in active}
    # A retry resumes from the last checkpoint of the trial it retries.
    keep |= {number for t in active if (number := retried_from(t)) is not None}
    deleted: list[Path] = []
    for trial in trials.values():
        run_dir = trial.user_attrs.get("run_dir")
        if trial.number in keep or run_dir is None:
            continue
        spared: set[Path] = set()
        if trial.state is TrialState.FAIL:
            spared = {Path(run_dir, name) for name in KEPT_BY_FAILED}
            if trial.user_attrs.get("best_checkpoint"):
                spared.add(Path(trial.user_attrs["best_checkpoint"]))
        gone = [path for path in sorted(Path(run_dir).glob("*.pt")) if path not in spared]
        for checkpoint in gone:
            checkpoint.unlink(missing_ok=True)
        deleted += gone
        best = trial.user_attrs.get("best_checkpoint")
        if best is not None and Path(best) in gone:
            amend_user_attrs(open_storage(config), study.study_name, trial.number,
                             {"best_checkpoint": None})
    if deleted:
        log.info("retention: deleted %d checkpoints outside the top %d", len(deleted),
                 config.registry.keep_top_k)
    return deleted


class RetentionListener(TrialListener):
    """Applies retention as each trial ends (after the registry, whose versions it keeps).

    It may not fail a trial: problems are logged as warnings.
    """

    def __init__(self, config: Config):
        self.config = config

    def trial_finished(self, trial: optuna.Trial, state: TrialState, value: float | None,
                       attrs: dict[str, Any]) -> None:
        try:
            enforce_retention(self.config, trial.study, _as_recorded(trial, state, value))
        except (OSError, sqlalchemy.exc.SQLAlchemyError) as error:
            log.warning("retention after trial %d failed: %s", trial.number, error)


def _as_recorded(trial: optuna.Trial, state: TrialState, value: float | None) -> FrozenTrial:
    """``trial`` as Optuna is about to record it."""
    frozen = copy.copy(trial.study.get_trials(deepcopy=False)[trial.number])
    frozen.state, frozen.value = state, value
    return frozen
