"""A standing worker (``python -m tuner_core worker --follow``): it waits for studies in
the storage and works on whichever is running and has trials left, then waits for the
next, as a queue consumer would. GPU machines stay ready for whatever study the chat
starts.

Several studies at once: **oldest first**. Before each trial, each device looks at the
open studies (not finished, not stopped) in the order they were created and takes a
trial from the first that has one left; so a new study waits until the older ones have
handed out their budgets, and every study ends as soon as it can (a study's end, its
champion and its confirmation do not wait for a study started later). Round robin would
spread the devices over all studies and make each take longer.

A study that was stopped never gives a trial again; the trials it was running end on
the stop request (the runner reads it), and the last worker to see nothing of it left
records its end. While the storage is unreachable (a PostgreSQL restart) the worker waits
and reconnects with backoff (:mod:`tuner_core.storage.reconnecting`). SIGTERM ends it as
it ends any worker: its trainers save their checkpoints and exit with it, and their trials
are retried by the others from those checkpoints.
"""

from __future__ import annotations

import contextlib
import logging

from tuner_core.config.sections import Config
from tuner_core.storage.attributes import BUDGET_ATTR, FINISHED_ATTR, STOP_ATTR
from tuner_core.study.crew import Crew, DeviceWork, Turn
from tuner_core.study.life import load_study
from tuner_core.study.worker import on_each_device
from tuner_core.trial.devices import Device, resolve_devices
from tuner_core.trial.listener import TrialListener
from tuner_core.trial.runner import WorkerLeaving

log = logging.getLogger(__name__)

# How often an idle standing worker looks for a study: one light query (the studies and
# their attributes) per look.
IDLE_POLL_S = 2.0


def follow(config: Config, listener: TrialListener | None = None, poll_s: float = 1.0,
           devices: list[Device] | None = None, idle_poll_s: float = IDLE_POLL_S) -> None:
    """Serve the storage's studies, oldest first, until SIGTERM.

    ``devices`` (default: ``trainer.devices``) each run one trainer at a time.
    """
    devices = devices or resolve_devices(config.trainer.devices)
    with Crew(config, devices, following=True, listener=listener, poll_s=poll_s) as crew:
        leave = crew.leaving
        log.info("following the studies of %s on %s", config.storage_shown,
                 ", ".join(device.name for device in devices))

        def work(device: Device) -> None:
            desks: dict[str, DeviceWork] = {}
            try:
                while not leave.is_set():
                    if not _take_a_trial(crew, device, desks):
                        leave.wait(idle_poll_s)
            except Exception:
                # The other devices would never end to report it: the worker leaves, and
                # its supervisor (systemd, Compose, Kubernetes) starts it again.
                log.exception("%s failed; the worker leaves", device.name)
                leave.set()
                raise
            finally:
                for desk in desks.values():
                    desk.close()

        with contextlib.suppress(WorkerLeaving):  # its trials stay running, to be retried
            on_each_device(devices, work)


def _take_a_trial(crew: Crew, device: Device, desks: dict[str, DeviceWork]) -> bool:
    """Run one trial of the oldest open study that has one left; whether one ran. Records
    the end of the studies found with nothing left."""
    unfinished = _unfinished_studies(crew)
    for name in set(desks) - {name for name, _ in unfinished}:
        desks.pop(name).close()  # the study has ended: its runner is no longer needed
    for name, stopped in unfinished:
        if name not in desks:
            log.info("%s: working on study %s", device.name, name)
            desks[name] = DeviceWork(crew, device, load_study(crew.config, name))
        desk = desks[name]
        turn = Turn.DONE if stopped else desk.turn()
        if turn is Turn.TRAINED:
            return True
        if turn is Turn.DONE:
            crew.finish_if_last(desk.study, desk.listener)
    return False


def _unfinished_studies(crew: Crew) -> list[tuple[str, bool]]:
    """The Smart Tuner studies not yet finished, oldest first (Optuna lists them in the
    order they were created), and whether each was asked to stop."""
    return [(study.study_name, bool(study.user_attrs.get(STOP_ATTR)))
            for study in crew.storage.get_all_studies()
            if BUDGET_ATTR in study.user_attrs and not study.user_attrs.get(FINISHED_ATTR)]
