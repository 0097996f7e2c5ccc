"""Studies over a storage URL: create or resume, run as a worker, and stop on request.

The Optuna storage is the single source of truth and the control channel. Next
to Optuna's own records, a study carries these user attributes:

``n_trials``        the study's trial budget (total, all workers together)
``created_at``      Unix time the study was created
``config``          the search space, fixed hyperparameters and objective it runs with
``stop_requested``  set by :func:`request_stop`: ``{"at": time, "by": who}``
``finished_at``     set by the last worker to leave, with ``end_reason``

Any number of workers (``python -m tuner_core worker``) may run the same study
from machines that reach the storage. They take trials from the budget under a
study-wide lock (:mod:`tuner_core.budget_lock`), so together they run exactly
``n_trials``. Each running trial has a heartbeat; a trial whose worker died is
failed when another worker notices and is retried (Optuna's
``RetryHeartbeatStaleTrialCallback``) from the dead trial's last checkpoint (see
:class:`tuner_core.runner.TrialRunner`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from tuner_core.budget_lock import BudgetLock
from tuner_core.config import Config, OptimizationConfig
from tuner_core.file_lock import file_lock
from tuner_core.retries import fail_stale_trials, retried_numbers, retry_callback
from tuner_core.runner import (
    ListenerGroup,
    TrialCrashed,
    TrialListener,
    TrialRunner,
    worker_lost,
)
from tuner_core.sampling import make_sampler
from tuner_core.trial_records import amend_user_attrs

log = logging.getLogger(__name__)

STOP_ATTR = "stop_requested"
BUDGET_ATTR = "n_trials"
FINISHED_ATTR = "finished_at"
ACTIVE_STATES = (TrialState.RUNNING, TrialState.WAITING)


class StudyNotFound(LookupError):
    """No study of that name in the storage; the message lists the ones there are."""


class StorageUnavailable(RuntimeError):
    """The storage cannot be opened; the message is one line naming it and why."""


_storages: dict[tuple[Any, ...], optuna.storages.RDBStorage] = {}
_storages_lock = threading.Lock()


def open_storage(config: Config) -> optuna.storages.RDBStorage:
    """The configured storage, with heartbeats and retries of trials whose worker died.

    One per process and setting: an RDB storage owns a connection pool, and two
    created at once on a new database would both try to create its tables.
    """
    opt = config.optimization
    key = (config.storage_url, opt.heartbeat_interval_s, opt.heartbeat_grace_s,
           opt.max_retries)
    with _storages_lock:
        if key not in _storages:
            _storages[key] = _new_storage(config)
        return _storages[key]


def _new_storage(config: Config) -> optuna.storages.RDBStorage:
    url = config.storage_url
    if url.startswith("sqlite:///"):
        # The bot reads while workers write; wait for SQLite's lock instead of failing.
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    opt = config.optimization

    def record_worker_lost(study: optuna.Study, trial: FrozenTrial, retry: int | None) -> None:
        # Optuna has failed the trial already; its record is completed afterwards.
        amend_user_attrs(storage, study.study_name, trial.number, worker_lost(retry))

    try:
        with _first_use_lock(url), warnings.catch_warnings():
            # Heartbeats are flagged experimental; see tuner_core.retries.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs,
                heartbeat_interval=opt.heartbeat_interval_s, grace_period=opt.heartbeat_grace_s,
                heartbeat_stale_trial_callback=retry_callback(opt.max_retries,
                                                              record_worker_lost))
    except (OSError, sqlalchemy.exc.SQLAlchemyError) as error:
        cause = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise StorageUnavailable(f"cannot open the storage {config.storage_shown}: "
                                 f"{cause}") from None
    return storage


def _first_use_lock(url: str) -> contextlib.AbstractContextManager[None]:
    """Held while a storage is opened: the first use of a SQLite database creates its
    tables, and two processes doing it at once would both try (as MLflow's store, see
    tuner_core.tracking). A PostgreSQL database is created by its administrator."""
    if not url.startswith("sqlite:///"):
        return contextlib.nullcontext()
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return file_lock(path.with_name(f"{path.name}.init.lock"))


def make_pruner(opt: OptimizationConfig) -> optuna.pruners.BasePruner:
    p = opt.pruner
    pruner: optuna.pruners.BasePruner
    if p.type == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials,
                                             n_warmup_steps=p.n_warmup_steps)
    elif p.type == "percentile":
        pruner = optuna.pruners.PercentilePruner(p.percentile, n_startup_trials=p.n_startup_trials,
                                                 n_warmup_steps=p.n_warmup_steps)
    elif p.type == "successive_halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, p.n_warmup_steps),
                                                        reduction_factor=p.reduction_factor)
    elif p.type == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=max(1, p.n_warmup_steps),
                                                reduction_factor=p.reduction_factor)
    else:
        pruner = optuna.pruners.NopPruner()
    if p.patience is not None and p.type != "none":
        pruner = optuna.pruners.PatientPruner(pruner, patience=p.patience)
    return pruner


def default_study_name(config: Config) -> str:
    return f"{config.experiment_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def create_study(config: Config, name: str | None = None,
                 n_trials: int | None = None) -> optuna.Study:
    """Create the study ``name`` or resume it; ``n_trials`` (the total) becomes its budget."""
    name = name or default_study_name(config)
    study = optuna.create_study(
        study_name=name, storage=open_storage(config), load_if_exists=True,
        direction=config.optimization.direction, sampler=make_sampler(config.optimization),
        pruner=make_pruner(config.optimization))
    attrs = study.user_attrs
    if "created_at" not in attrs:
        study.set_user_attr("created_at", time.time())
        study.set_user_attr("config", {
            "experiment_name": config.experiment_name,
            "objective_metric": config.optimization.objective_metric,
            "direction": config.optimization.direction,
            "search_space": {k: v.model_dump(mode="json")
                             for k, v in config.hyperparameter_search_space.items()},
            "fixed_hparams": config.fixed_hparams,
        })
    if n_trials is not None or BUDGET_ATTR not in attrs:
        study.set_user_attr(BUDGET_ATTR, n_trials or config.optimization.n_trials)
    if FINISHED_ATTR in attrs:  # resuming a finished or stopped study reopens it
        for key in (FINISHED_ATTR, "end_reason", STOP_ATTR):
            study.set_user_attr(key, None)
    return study


def load_study(config: Config, name: str) -> optuna.Study:
    """The existing study ``name``, with the configured sampler and pruner."""
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


def run_worker(config: Config, study: optuna.Study, listener: TrialListener | None = None,
               poll_s: float = 1.0) -> None:
    """Run trials of ``study`` until its budget is used or a stop is requested, then
    wait for the other workers' running trials (to retry any whose worker dies).

    MLflow tracking (when ``mlflow.enabled``) and the model registry hear of every trial
    before ``listener`` does.
    """
    # Imported here: MLflow takes seconds to load, and only workers need it.
    from tuner_core.registry import RegistryListener
    from tuner_core.tracking import MlflowTracker

    listener = ListenerGroup(MlflowTracker(config) if config.mlflow.enabled else None,
                             RegistryListener(config), listener)
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
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                break
            # The budget is taken, but another worker's trial still runs; stay to retry it
            # should that worker die, and leave as soon as it ends.
            time.sleep(poll_s)
        runner.renders.wait()  # the plots of stopped trials, drawn beside the later ones
    finally:
        runner.close()
    with budget_lock:  # two workers leaving at once must not both end the study
        finished = _mark_finished_if_last(study)
    if finished:
        listener.study_finished(study)


def _mark_finished_if_last(study: optuna.Study) -> bool:
    """Record the study's end unless a worker is still busy (it will) or another one
    has already recorded it; whether this call did."""
    if (study.user_attrs.get(FINISHED_ATTR)  # None after a resume reopened the study
            or study.get_trials(deepcopy=False, states=ACTIVE_STATES)):
        return False
    reason = "stopped on request" if stop_requested(study) else "all trials done"
    study.set_user_attr("end_reason", reason)
    study.set_user_attr(FINISHED_ATTR, time.time())
    log.info("study %s finished: %s", study.study_name, reason)
    return True
