"""The bot's view of the tuner: an async facade over :class:`tuner_core.SmartTuner`.

Every call that touches the study storage, MLflow, the disk or matplotlib runs in a
thread (``asyncio.to_thread``), so the event loop keeps answering while they work.
The decisions the commands need (is a study running, may it be stopped, is N a
valid budget) are made here; handlers only route, and :mod:`bot.messages` words.

/status answers from the latest study's status as the notifier's last poll read it
(:meth:`TunerService.latest_status`): one storage read per poll, shared by every
/status, so the command never waits on the storage.

Buttons name a study by its storage id, a small integer, because a study name may be
longer than Telegram's 64 bytes of callback data; :meth:`TunerService.study_name`
maps it back and refuses ids that do not exist (stale or forged buttons).
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import optuna

from bot.listening_texts import refused
from bot.voice import VoiceNote, voice_note
from tuner_core import (
    PROJECT_ROOT,
    NotReady,
    RegistryError,
    SmartTuner,
    StorageUnavailable,
)
from tuner_core.errors import RequirementsUnmet
from tuner_core.reporting import events as feed
from tuner_core.storage import TRIAL_RUN_ATTR, VERSION_ATTR

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # the Bot API's limit for files a bot sends
QUOTE_LIMIT = 100  # characters of the user's input that a reply quotes


class BotError(Exception):
    """An expected failure; its message (plain text) is what the user is told."""


def quoted(user_input: str) -> str:
    """``user_input`` quoted in a reply, cut to :data:`QUOTE_LIMIT` characters: an
    overlong argument must not make the reply too long for Telegram, which would then
    refuse it, and the user would hear nothing."""
    if len(user_input) > QUOTE_LIMIT:
        user_input = user_input[:QUOTE_LIMIT - 1] + "…"
    return repr(user_input)


@dataclass(frozen=True)
class StartedStudy:
    """A study that /tune just launched in a new worker process, or left to the
    standing workers (``telegram.start_worker: false``)."""

    name: str
    study_id: int
    n_trials: int
    objective_metric: str
    direction: str
    search_space: list[str]
    by_fleet: bool = False


class StopOutcome(StrEnum):
    REQUESTED = "requested"
    ALREADY_STOPPING = "already stopping"
    FINISHED = "finished"


@dataclass(frozen=True)
class Curves:
    """A study's learning curves as PNG; ``best_trial`` is None when none completed."""

    study: str
    png: bytes
    best_trial: int | None


@dataclass(frozen=True)
class ExportedModel:
    """An export folder, zipped; ``zip_path`` is None when the zip is too big to send."""

    version: str
    folder: Path
    zip_path: Path | None


class TunerService:
    """One per bot; holds the storage connection and the workers it launched."""

    def __init__(self, tuner: SmartTuner):
        self.tuner = tuner
        self.config = tuner.config
        self._storage: optuna.storages.BaseStorage | None = None
        self._workers: dict[str, subprocess.Popen[bytes]] = {}
        self._starting = asyncio.Lock()  # two quick /tune must not start two studies
        # The latest study's status (None: no study) and when its read began;
        # -inf until the first read.
        self._latest: dict[str, Any] | None = None
        self._latest_as_of = -math.inf

    # --- studies ----------------------------------------------------------------------------

    def parse_trials(self, argument: str | None) -> int:
        """The N of ``/tune N``: the configured default when absent, else 1 … the maximum."""
        if not argument:
            return self.config.optimization.n_trials
        limit = self.config.telegram.max_trials_per_study
        usage = (f"Usage: /tune N, where N is the number of trials, from 1 to {limit} "
                 f"(without N: {self.config.optimization.n_trials}).")
        text = argument.strip()
        # ASCII digits only: int() would also take "３" (full-width) or "1_0".
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise BotError(f"{quoted(text)} is not a whole number. {usage}")
        n_trials = int(text)
        if not 1 <= n_trials <= limit:
            raise BotError(f"{quoted(text)} is out of range. {usage}")
        return n_trials

    async def start_study(self, n_trials: int) -> StartedStudy | dict[str, Any]:
        """Launch a study of ``n_trials`` in a worker, or the status of the one still running."""
        async with self._starting:
            if running := await self.running_study():
                return running
            try:
                name, process = await asyncio.to_thread(
                    self.tuner.start_study, n_trials,
                    local_worker=self.config.telegram.start_worker)
            except (NotReady, StorageUnavailable) as error:  # one line saying why
                raise BotError(f"Cannot start a study: {error}") from None
            if process is not None:
                self._workers[name] = process
            await self.refresh_status()  # so that /status shows the new study at once
            opt = self.config.optimization
            return StartedStudy(
                name=name, study_id=await self.study_id(name), n_trials=n_trials,
                objective_metric=opt.objective_metric, direction=opt.direction,
                search_space=self.tuner.search_space(), by_fleet=process is None)

    async def running_study(self) -> dict[str, Any] | None:
        """The latest study's status if it is running and someone is working on it.

        A study whose worker died keeps the state ``running``; it counts only while a
        trial is running (a worker anywhere) or the worker this bot launched is alive, or,
        where standing workers train every study (``telegram.start_worker: false``),
        while it is running at all: it waits for them.
        """
        status = await self.status()
        if status is None or status["state"] != "running":
            return None
        worker = self._workers.get(status["study_name"])
        alive = (bool(status["running"]) or not self.config.telegram.start_worker
                 or (worker is not None and worker.poll() is None))
        return status if alive else None

    async def status(self, study_id: int | None = None) -> dict[str, Any] | None:
        """``SmartTuner.status`` of a study (the latest by default), read now, plus its
        ``study_id`` and ``as_of`` (when the read began); None when there is no study."""
        as_of = time.time()
        name = await self._name_or_latest(study_id)
        if name is None:
            return None
        status = await asyncio.to_thread(self.tuner.status, name)
        return {**status, "study_id": await self.study_id(name), "as_of": as_of,
                "fleet": await self.workers()}

    async def workers(self) -> list[dict[str, Any]]:
        """The fleet: every worker on the storage's studies (``SmartTuner.workers``)."""
        return await asyncio.to_thread(self.tuner.workers)

    async def latest_status(self) -> dict[str, Any] | None:
        """The latest study's status as of the last :meth:`refresh_status` (the
        notifier's poll); read now only when nothing has been read yet."""
        if self._latest_as_of == -math.inf:
            return await self.refresh_status()
        return self._latest

    async def refresh_status(self) -> dict[str, Any] | None:
        """Read the latest study's status for :meth:`latest_status`; it. A read that
        began before the one kept (reads may overlap) does not replace it."""
        as_of = time.time()
        status = await self.status()
        if as_of > self._latest_as_of:
            self._latest, self._latest_as_of = status, as_of
        return self._latest

    async def request_stop(self, study_id: int, by: str) -> tuple[str, StopOutcome]:
        """Ask the study's workers to stop, unless it is already stopping or finished."""
        name = await self.study_name(study_id)
        state = (await asyncio.to_thread(self.tuner.status, name))["state"]
        if state == "finished":
            return name, StopOutcome.FINISHED
        if state == "stopping":
            return name, StopOutcome.ALREADY_STOPPING
        await asyncio.to_thread(self.tuner.request_stop, name, by)
        await self.refresh_status()  # so that /status says "stopping" at once
        return name, StopOutcome.REQUESTED

    async def stoppable_study(self, study_id: int | None = None) -> dict[str, Any]:
        """The status of a study (the latest by default) that a stop request would stop."""
        status = await self.status(study_id)
        if status is None or status["state"] == "finished":
            raise BotError("No study is running.")
        if status["state"] == "stopping":
            raise BotError(f"Study {status['study_name']} is already stopping.")
        return status

    async def best(self, study_id: int | None = None) -> dict[str, Any] | None:
        """The best trial of a study (``SmartTuner.best``) with ``study_name`` and
        ``study_id``; None when the study has no completed trial or there is no study."""
        name = await self._name_or_latest(study_id)
        best = name and await asyncio.to_thread(self.tuner.best, name)
        if not best:
            return None
        study_id = await self.study_id(name)
        storage = await self.storage()

        def records() -> dict[str, Any]:
            trial = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(
                study_id, best["number"]))
            return {"mlflow_run_id": trial.user_attrs.get(TRIAL_RUN_ATTR),
                    "version": trial.user_attrs.get(VERSION_ATTR)}

        return {**best, "study_name": name, "study_id": study_id,
                **await asyncio.to_thread(records)}

    async def latest_study_name(self) -> str | None:
        return await self._name_or_latest(None)

    async def trials(self, limit: int = 10) -> tuple[str, list[dict[str, Any]]] | None:
        """The latest study's name and its last ``limit`` trials; None without a study."""
        name = await self._name_or_latest(None)
        if name is None:
            return None
        return name, await asyncio.to_thread(self.tuner.trials, name, limit)

    async def learning_curves(self, study_id: int | None = None) -> Curves | None:
        """The study's learning curves as PNG, and its best trial; None without a study."""
        name = await self._name_or_latest(study_id)
        if name is None:
            return None
        best = await asyncio.to_thread(self.tuner.best, name)
        return Curves(name, await self.learning_curves_of(name),
                      best["number"] if best else None)

    async def anytime_of(self, name: str) -> bytes:
        """The study's best value against the compute it spent, as PNG."""
        return await asyncio.to_thread(self.tuner.anytime_png, name)

    async def learning_curves_of(self, name: str) -> bytes:
        # matplotlib takes seconds to import: at the first plot, not at the bot's start,
        # and in the thread, not in the event loop.
        return await asyncio.to_thread(self.tuner.learning_curves_png, name)

    async def voice_sample(self, study_id: int, trial: int) -> VoiceNote | None:
        """The newest audio sample the trainer wrote for the trial, as a voice message;
        None when it has none."""
        name = await self.study_name(study_id)
        try:
            path = await asyncio.to_thread(self.tuner.audio_sample, name, trial)
        except LookupError as error:  # no such trial: a forged button
            raise BotError(str(error)) from None
        return None if path is None else await asyncio.to_thread(voice_note, path)

    # --- the model registry -------------------------------------------------------------------

    async def models(self) -> list[dict[str, Any]]:
        """Every registered model version, newest first (see ``SmartTuner.models``)."""
        return await asyncio.to_thread(self.tuner.models)

    async def model(self, version: str | None) -> dict[str, Any] | None:
        """The registry's record of ``version``, with its aliases; None for None."""
        if version is None:
            return None
        return next((model for model in await self.models() if model["version"] == version),
                    None)

    async def best_version(self, study: str) -> int | None:
        """The version registered from the study's best trial, if any."""
        version = await asyncio.to_thread(self.tuner.best_version, study)
        return int(version) if version is not None else None

    async def promote(self, version: int) -> dict[str, Any]:
        """Make ``version`` the champion (again: harmless); its record, with ``replaced``."""
        def promote() -> dict[str, Any]:  # MLflow loads here, off the event loop
            try:
                return self.tuner.promote(str(version))
            except RequirementsUnmet as refusal:
                raise BotError(refused(version, refusal.failed)) from None
            except RegistryError:
                raise BotError(f"There is no model version {version}.") from None

        return await asyncio.to_thread(promote)

    async def require_version(self, version: int) -> None:
        """Raise :class:`BotError` unless ``version`` is a registered model version."""
        if await self.model(str(version)) is None:
            raise BotError(f"There is no model version {version}.")

    async def export(self, version: int) -> ExportedModel:
        """Export ``version`` to ``state_dir/exports/v<version>`` and zip it, if small enough.

        The export (``python -m tuner_core export``) runs in a child process: it may take
        a while (it may even synthesise a sample), and a bot that stops cancels it by
        ending the process, which it could not do to a thread.
        """
        out = (self.config.state_dir / "exports" / f"v{version}").resolve()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tuner_core", "export", str(version), "--out", str(out),
            "--config", str(self.tuner.config_path), cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, errors = await process.communicate()
        except asyncio.CancelledError:
            process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            raise RuntimeError(f"the export of version {version} failed (exit code "
                               f"{process.returncode}): {errors.decode(errors='replace')[-2000:]}")
        return ExportedModel(str(version), out, await asyncio.to_thread(zip_folder, out))

    # --- study ids, for buttons -------------------------------------------------------------

    async def study_id(self, name: str) -> int:
        storage = await self.storage()
        return await asyncio.to_thread(storage.get_study_id_from_name, name)

    async def study_name(self, study_id: int) -> str:
        storage = await self.storage()
        try:
            return await asyncio.to_thread(storage.get_study_name_from_id, study_id)
        except KeyError:
            raise BotError("That study does not exist (any more).") from None

    async def _name_or_latest(self, study_id: int | None) -> str | None:
        if study_id is not None:
            return await self.study_name(study_id)
        return await asyncio.to_thread(self.tuner.latest_study_name)

    async def storage(self) -> optuna.storages.BaseStorage:
        """The study storage, opened once (it holds a connection pool)."""
        if self._storage is None:
            self._storage = await asyncio.to_thread(self.tuner.storage)
        return self._storage

    # --- the notification feed ---------------------------------------------------------------

    async def news(self, delivered: set[str]) -> list[feed.Notification]:
        """What happened in any study since the notifications in ``delivered``."""
        self._forget_exited_workers()
        storage = await self.storage()
        return await asyncio.to_thread(feed.collect, storage, set(delivered))

    async def finished_studies_backlog(self) -> set[str]:
        storage = await self.storage()
        return await asyncio.to_thread(feed.finished_studies_backlog, storage)

    def _forget_exited_workers(self) -> None:
        # poll() also reaps the exited process, so no zombie is left behind.
        for name, process in list(self._workers.items()):
            if process.poll() is not None:
                del self._workers[name]


def zip_folder(folder: Path) -> Path | None:
    """``folder`` as ``folder.zip`` beside it; None when too big for the Bot API."""
    archive = Path(shutil.make_archive(str(folder), "zip", root_dir=folder))
    if archive.stat().st_size > MAX_UPLOAD_BYTES:
        archive.unlink()
        return None
    return archive
