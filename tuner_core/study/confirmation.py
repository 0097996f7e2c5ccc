"""Confirming a study's champions over training seeds, once its budget is spent.

With ``optimization.confirm: {top_k: K, seeds: S}``, the worker that finds the budget spent
and no trial running queues the K best configurations again (Optuna's ``enqueue_trial``,
the same parameters), S times each, with the training seeds after the one each trained
with. They train in full (the pruner leaves them alone; the early-stopping criteria still
apply), and the study's champion is then the configuration of the best mean
(:func:`tuner_core.storage.confirmations.confirmed_best`).
"""

from __future__ import annotations

import logging

import optuna
from optuna.trial import TrialState

from train.tacotron2.hparams import HParams
from tuner_core.config.sections import Config
from tuner_core.storage.attributes import CONFIRMATION_ATTR, CONFIRMS_ATTR, TRAINING_SEED_ATTR

log = logging.getLogger(__name__)


def enqueue_confirmations(config: Config, study: optuna.Study) -> bool:
    """Queue the confirmation trials, unless they are not configured or were queued
    already; whether this call queued any. Call under the study's budget lock."""
    confirm = config.optimization.confirm
    if confirm is None or CONFIRMATION_ATTR in study.user_attrs:
        return False
    complete = [trial for trial in study.get_trials(deepcopy=False,
                                                    states=(TrialState.COMPLETE,))
                if CONFIRMS_ATTR not in trial.user_attrs]
    complete.sort(key=lambda trial: trial.value,
                  reverse=config.optimization.direction == "maximize")
    chosen: list[optuna.trial.FrozenTrial] = []
    seen: list[dict] = []
    for trial in complete:  # one trial per configuration
        if trial.params not in seen:
            seen.append(trial.params)
            chosen.append(trial)
    chosen = chosen[:confirm.top_k]
    for trial in chosen:
        seed = _training_seed(config, trial.params)
        for k in range(1, confirm.seeds + 1):
            study.enqueue_trial(trial.params, user_attrs={CONFIRMS_ATTR: trial.number,
                                                          TRAINING_SEED_ATTR: seed + k},
                                skip_if_exists=False)
    study.set_user_attr(CONFIRMATION_ATTR, [trial.number for trial in chosen])
    if chosen:
        log.info("study %s: confirming trials %s with %d more training seeds each",
                 study.study_name, ", ".join(str(t.number) for t in chosen), confirm.seeds)
    return bool(chosen)


def _training_seed(config: Config, params: dict) -> int:
    """The ``seed`` a trial of ``params`` trained with: searched, fixed, or the default."""
    return int(params.get("seed", config.fixed_hparams.get("seed", HParams().seed)))
