"""A worker: the composition root that runs a study's trials in this process, one trainer
per device at once (``trainer.devices``; one by default).

Any number of workers (``python -m tuner_core worker``) may run the same study from
machines that reach the storage. They take trials from the budget under a study-wide
lock (:mod:`tuner_core.storage.budget_lock`), so together they run exactly ``n_trials``;
each device of a worker takes its trials as a worker of its own would
(:mod:`tuner_core.study.crew`). Each running trial has a heartbeat; a trial whose worker
died is failed when another worker notices and is retried (Optuna's
``RetryHeartbeatStaleTrialCallback``) from the dead trial's last checkpoint (see
:class:`tuner_core.trial.runner.TrialRunner`). Each worker keeps its row in the fleet
(:mod:`tuner_core.storage.fleet`) while it works.

Once the budget is spent, a study with ``optimization.confirm`` trains its champions again
with other seeds (:mod:`tuner_core.study.confirmation`).

Each trial is heard by MLflow tracking and the model registry (when ``mlflow.enabled``;
otherwise MLflow is never imported), then retention, then the caller's listener.

A standing worker, which serves whichever study is running, is
:mod:`tuner_core.study.standing`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import optuna

from tuner_core.config.sections import Config
from tuner_core.study.crew import Crew, DeviceWork, Turn
from tuner_core.study.life import stop_requested
from tuner_core.trial.devices import Device, resolve_devices
from tuner_core.trial.listener import TrialListener
from tuner_core.trial.runner import WorkerLeaving

T = TypeVar("T")


def run_worker(config: Config, study: optuna.Study, listener: TrialListener | None = None,
               poll_s: float = 1.0, devices: list[Device] | None = None) -> None:
    """Run trials of ``study`` until its budget is used or a stop is requested, then
    wait for the other workers' running trials (to retry any whose worker dies).

    ``devices`` (default: ``trainer.devices``) each run one trainer at a time. MLflow
    tracking and the model registry (when ``mlflow.enabled``) and retention hear of every
    trial before ``listener`` does.
    """
    devices = devices or resolve_devices(config.trainer.devices)
    with Crew(config, devices, following=False, listener=listener, poll_s=poll_s) as crew:

        def work(device: Device) -> DeviceWork:
            desk = DeviceWork(crew, device, study)
            try:
                while not stop_requested(study) and not crew.leaving.is_set():
                    turn = desk.turn()
                    if turn is Turn.DONE:
                        break
                    if turn is Turn.WAITING:
                        # The budget is taken, but another trial still runs; stay to retry
                        # it should its worker die, and leave as soon as it ends.
                        crew.leaving.wait(poll_s)
            finally:
                desk.close()
            return desk

        try:
            desks = on_each_device(devices, work)
        except WorkerLeaving:  # its trials stay running, for another worker to retry
            return
        crew.finish_if_last(study, desks[0].listener)


def on_each_device(devices: list[Device], work: Callable[[Device], T]) -> list[T]:
    """``work(device)`` for every device at once, each in a thread (one device: in this
    one); their results, once all have ended. The first error raises, after the others end.
    """
    if len(devices) == 1:
        return [work(devices[0])]
    with ThreadPoolExecutor(len(devices), thread_name_prefix="device") as pool:
        futures = [pool.submit(work, device) for device in devices]
    return [future.result() for future in futures]
