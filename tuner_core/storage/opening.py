"""Opening the Optuna storage: one per process and setting, with heartbeats and the retry
of trials whose worker died.

SQLite (one machine; the default, in the state folder) or PostgreSQL (several machines).
A storage that cannot be opened raises :class:`~tuner_core.errors.StorageUnavailable`,
one line naming it and why; a PostgreSQL server with no free connection is waited for.
Opening a SQLite storage creates its file: a reader asks :func:`storage_exists` first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial

from tuner_core.config.sections import Config
from tuner_core.errors import StorageUnavailable
from tuner_core.storage.attributes import worker_lost
from tuner_core.storage.file_lock import file_lock
from tuner_core.storage.reconnecting import (
    ReconnectingStorage,
    connection_lost,
    no_free_connection,
    with_backoff,
)
from tuner_core.storage.records import amend_user_attrs
from tuner_core.storage.retries import retry_callback

log = logging.getLogger(__name__)

_storages: dict[tuple[Any, ...], optuna.storages.RDBStorage] = {}
_storages_lock = threading.Lock()


def open_storage(config: Config) -> ReconnectingStorage:
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


def open_worker_storage(config: Config) -> ReconnectingStorage:
    """The storage as a worker uses it: every call of the process waits for a PostgreSQL
    server that restarts or is full, rather than fail (a SQLite file does neither). A
    worker opens it so before its first call; readers (the bot, the CLI) fail at once."""
    storage = open_storage(config)
    storage.rides_out_outages = sqlite_file(config.storage_url) is None
    return storage


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL (Optuna's storage or MLflow's store); None for
    another kind of database, or one in memory."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return None if path.name == ":memory:" else path


def storage_exists(config: Config) -> bool:
    """Whether the study storage is there to be read without creating it: False only for a
    SQLite file that does not exist yet (opening it would create it, tables and all)."""
    path = sqlite_file(config.storage_url)
    return path is None or path.exists()


def _new_storage(config: Config) -> ReconnectingStorage:
    url = config.storage_url
    if url.startswith("sqlite:///"):
        # The bot reads while workers write; wait for SQLite's lock instead of failing.
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        # PostgreSQL allows 100 connections by default, for every worker, bot and MLflow
        # server together. A process keeps none between its calls: each call opens one
        # and closes it (a few milliseconds), so a fleet needs as many connections as it
        # makes calls at once, not one or two per worker whether it calls or not. Kept
        # connections (SQLAlchemy's pools) filled a server at one or two per worker, and
        # past its limit they deadlocked the fleet: the budget lock's holder, which needs
        # a second connection while it holds the lock, waited for one that the waiting
        # workers' pools kept idle (bench/storage_load.py).
        engine_kwargs = {"poolclass": sqlalchemy.pool.NullPool,
                         "connect_args": {"application_name": application_name()}}
    opt = config.optimization

    def record_worker_lost(study: optuna.Study, trial: FrozenTrial, retry: int | None) -> None:
        # Optuna has failed the trial already; its record is completed afterwards.
        amend_user_attrs(storage, study.study_name, trial.number, worker_lost(retry))

    def construct() -> ReconnectingStorage:
        with _first_use_lock(url), warnings.catch_warnings():
            # Heartbeats are flagged experimental; see tuner_core.storage.retries.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return ReconnectingStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=opt.heartbeat_interval_s,
                grace_period=opt.heartbeat_grace_s,
                heartbeat_stale_trial_callback=retry_callback(opt.max_retries,
                                                              record_worker_lost))

    told = False

    def no_connection_yet(error: BaseException) -> None:
        # A fleet larger than the server's max_connections: the workers that find no free
        # connection wait for one, rather than leave; they say so once.
        nonlocal told
        if not told:
            log.warning("no free connection in the storage %s (%s); waiting for one",
                        config.storage_shown, _cause(error))
            told = True

    try:
        storage = with_backoff(construct, no_free_connection, no_connection_yet)
    except (OSError, sqlalchemy.exc.SQLAlchemyError,
            optuna.exceptions.StorageInternalError) as error:
        raise StorageUnavailable(f"cannot open the storage {config.storage_shown}: "
                                 f"{_cause(error)}") from None
    return storage


def _cause(error: BaseException) -> str:
    """The first line of what went wrong, under Optuna's own wrapping of a lost connection."""
    reason = connection_lost(error) or error
    return str(getattr(reason, "orig", None) or reason).strip().splitlines()[0]


def application_name() -> str:
    """What PostgreSQL shows of this process's connections (``pg_stat_activity``), so that
    whoever runs the database sees which worker holds which: "smart-tuner PID@HOST" (the
    server keeps 63 characters, so the host comes last)."""
    return f"smart-tuner {os.getpid()}@{socket.gethostname()}"


def _first_use_lock(url: str) -> contextlib.AbstractContextManager[None]:
    """Held while a storage is opened: the first use of a SQLite database creates its
    tables, and two processes doing it at once would both try (as MLflow's store, see
    tuner_core.tracking.store). A PostgreSQL database is created by its administrator."""
    path = sqlite_file(url)
    if path is None:
        return contextlib.nullcontext()
    path.parent.mkdir(parents=True, exist_ok=True)
    return file_lock(path.with_name(f"{path.name}.init.lock"))
