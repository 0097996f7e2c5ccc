"""A worker: the composition root that runs a study's trials in this process.

Any number of workers (``python -m tuner_core worker``) may run the same study from
machines that reach the storage. They take trials from the budget under a study-wide
lock (:mod:`tuner_core.storage.budget_lock`), so together they run exactly ``n_trials``.
Each running trial has a heartbeat; a trial whose worker died is failed when another
worker notices and is retried (Optuna's ``RetryHeartbeatStaleTrialCallback``) from the
dead trial's last checkpoint (see :class:`tuner_core.trial.runner.TrialRunner`).

Once the budget is spent, a study with ``optimization.confirm`` trains its champions again
with other seeds (:mod:`tuner_core.study.confirmation`).

Each trial is heard by MLflow tracking and the model registry (when ``mlflow.enabled``;
otherwise MLflow is never imported), then retention, then the caller's listener.
"""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from tuner_core import tracking
from tuner_core.config.sections import Config
from tuner_core.storage.budget_lock import BudgetLock
from tuner_core.storage.opening import open_storage
from tuner_core.storage.retries import fail_stale_trials
from tuner_core.study.confirmation import enqueue_confirmations
from tuner_core.study.life import mark_finished_if_last, stop_requested, trials_left
from tuner_core.study.retention import RetentionListener
from tuner_core.trial.listener import ListenerGroup, TrialListener
from tuner_core.trial.runner import TrialCrashed, TrialRunner


def run_worker(config: Config, study: optuna.Study, listener: TrialListener | None = None,
               poll_s: float = 1.0) -> None:
    """Run trials of ``study`` until its budget is used or a stop is requested, then
    wait for the other workers' running trials (to retry any whose worker dies).

    MLflow tracking and the model registry (when ``mlflow.enabled``) and retention hear
    of every trial before ``listener`` does.
    """
    mlflow = ((tracking.MlflowTracker(config), tracking.RegistryListener(config))
              if config.mlflow.enabled else ())
    listener = ListenerGroup(*mlflow, RetentionListener(config), listener)
    runner = TrialRunner(config, study.study_name, stop_requested=lambda: stop_requested(study),
                         listener=listener, poll_s=poll_s)
    storage = open_storage(config)
    budget_lock = BudgetLock(config.storage_url, storage.engine,
                             storage.get_study_id_from_name(study.study_name))

    def run_claimed_trial(trial: optuna.Trial) -> float:
        budget_lock.release()  # the trial is in the storage now: every count sees it
        return runner(trial)

    try:
        while not stop_requested(study):
            with budget_lock:
                # Fail (and so queue the retry of) trials whose worker died, before counting.
                fail_stale_trials(study)
                queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                if trials_left(study) > 0 or queued:
                    study.optimize(run_claimed_trial, n_trials=1, catch=(TrialCrashed,),
                                   gc_after_trial=False)
                    continue
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                # The budget is spent and every trial has ended: confirm the champions, once.
                if not running and enqueue_confirmations(config, study):
                    continue
            if not running:
                break
            # The budget is taken, but another worker's trial still runs; stay to retry it
            # should that worker die, and leave as soon as it ends.
            time.sleep(poll_s)
        runner.renders.wait()  # the plots of stopped trials, drawn beside the later ones
    finally:
        runner.close()
    with budget_lock:  # two workers leaving at once must not both end the study
        finished = mark_finished_if_last(study)
    if finished:
        listener.study_finished(study)
