"""A worker's devices and what they share: one trainer per device, each in a thread of its
own, taking its trials from the budget as a worker of its own would.

:class:`Crew` is what the devices of one worker process share: the warm trainer launcher,
the worker's record in the fleet (:mod:`tuner_core.storage.fleet`), the caller's listener.
:class:`DeviceWork` is one device working on one study: each turn it takes a trial from
the study's budget under the study-wide lock (:mod:`tuner_core.storage.budget_lock`) and
runs it, or finds that none is left. Each device has its own runner and its own MLflow
and retention listeners, which follow one trial at a time.

SIGTERM (when the worker runs in the main thread, as the CLI's does) makes the worker
leave: its trainers save their checkpoints and exit, their trials stay running for
another worker to retry from those checkpoints (as if the worker had been killed), and
the worker leaves the fleet.
"""

from __future__ import annotations

import enum
import logging
import signal
import threading
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner_core import tracking
from tuner_core.config.location import PROJECT_ROOT
from tuner_core.config.sections import Config
from tuner_core.storage.budget_lock import BudgetLock
from tuner_core.storage.fleet import FleetMember
from tuner_core.storage.opening import open_worker_storage
from tuner_core.storage.reconnecting import OUTAGE
from tuner_core.storage.retries import fail_stale_trials
from tuner_core.study.confirmation import enqueue_confirmations
from tuner_core.study.life import mark_finished_if_last, stop_requested, trials_left
from tuner_core.study.retention import RetentionListener
from tuner_core.trial.devices import Device
from tuner_core.trial.listener import ListenerGroup, TrialListener
from tuner_core.trial.process import SharedLauncher
from tuner_core.trial.runner import TrialCrashed, TrialRunner

log = logging.getLogger(__name__)


class Turn(enum.Enum):
    TRAINED = "trained"  # a trial ran (or confirmations were queued): take another turn
    WAITING = "waiting"  # none left to take, but other workers' trials still run
    DONE = "done"  # nothing left to take and none running (or the study was stopped)


class Crew:
    """What the devices of one worker share; ``with crew:`` while the worker works."""

    def __init__(self, config: Config, devices: list[Device], following: bool,
                 listener: TrialListener | None, poll_s: float):
        self.config = config
        self.devices = devices
        self.listener = listener
        self.poll_s = poll_s
        self.storage = open_worker_storage(config)
        self.launcher = (SharedLauncher(config.trainer.python, PROJECT_ROOT,
                                        TrialRunner.child_env(threads=1))
                         if config.trainer.preload else None)
        self.member = FleetMember(self.storage.engine, [d.name for d in devices], following,
                                  config.optimization.heartbeat_interval_s)
        self.leaving = threading.Event()  # set by SIGTERM
        self._sigterm: Any = None  # the handler before the worker's

    def __enter__(self) -> Crew:
        self.member.__enter__()
        if threading.current_thread() is threading.main_thread():
            self._sigterm = signal.signal(signal.SIGTERM, self._leave)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._sigterm is not None:
            signal.signal(signal.SIGTERM, self._sigterm)
        if self.launcher is not None:
            self.launcher.close()
        self.member.__exit__(*exc_info)
        # The process's other readers of the storage, if any, fail fast again.
        self.storage.rides_out_outages = False

    def _leave(self, *_: object) -> None:
        log.warning("SIGTERM: leaving once the running trainers have saved their checkpoints")
        self.leaving.set()
        OUTAGE.given_up.set()  # a storage call waiting for the database fails now

    def listeners(self) -> ListenerGroup:
        """A device's listeners: MLflow tracking and the model registry (when
        ``mlflow.enabled``), retention, then the caller's."""
        mlflow = ((tracking.MlflowTracker(self.config), tracking.RegistryListener(self.config))
                  if self.config.mlflow.enabled else ())
        return ListenerGroup(*mlflow, RetentionListener(self.config), self.listener)

    def finish_if_last(self, study: optuna.Study, listener: TrialListener) -> None:
        """Record the study's end if nothing of it is left running or queued."""
        storage_id = self.storage.get_study_id_from_name(study.study_name)
        with BudgetLock(self.config.storage_url, self.storage.engine, storage_id):
            finished = mark_finished_if_last(study)  # two workers must not both end it
        if finished:
            listener.study_finished(study)


class DeviceWork:
    """One device working on one study's trials, a turn at a time."""

    def __init__(self, crew: Crew, device: Device, study: optuna.Study):
        self.crew = crew
        self.device = device
        self.study = study
        self.listener = crew.listeners()
        self.runner = TrialRunner(
            crew.config, study.study_name, stop_requested=lambda: stop_requested(study),
            listener=self.listener, poll_s=crew.poll_s, device=device,
            trainers=len(crew.devices), launcher=crew.launcher, leaving=crew.leaving)
        self.budget_lock = BudgetLock(crew.config.storage_url, crew.storage.engine,
                                      crew.storage.get_study_id_from_name(study.study_name))

    def turn(self) -> Turn:
        """Take a trial from the study's budget and run it, if one is left."""
        study = self.study
        with self.budget_lock:
            if stop_requested(study) or self.crew.leaving.is_set():
                return Turn.DONE  # never a new trial from a stopped study
            # Fail (and so queue the retry of) trials whose worker died, before counting.
            fail_stale_trials(study)
            queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if trials_left(study) > 0 or queued:
                study.optimize(self._run_claimed_trial, n_trials=1, catch=(TrialCrashed,),
                               gc_after_trial=False)
                return Turn.TRAINED
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            # The budget is spent and every trial has ended: confirm the champions, once.
            if not running and enqueue_confirmations(self.crew.config, study):
                return Turn.TRAINED
        return Turn.WAITING if running else Turn.DONE

    def _run_claimed_trial(self, trial: optuna.Trial) -> float:
        self.budget_lock.release()  # the trial is in the storage now: every count sees it
        member = self.crew.member
        member.trial_started(self.device.name, self.study.study_name, trial.number)
        try:
            return self.runner(trial)
        finally:
            member.trial_ended(self.device.name)

    def close(self) -> None:
        """Wait for the plots of its stopped trials (drawn beside the later ones)."""
        self.runner.renders.wait()
        self.runner.close()

