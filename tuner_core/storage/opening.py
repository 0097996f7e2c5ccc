"""Opening the Optuna storage: one per process and setting, with heartbeats and the retry
of trials whose worker died.

SQLite (one machine; the default, in the state folder) or PostgreSQL (several machines).
A storage that cannot be opened raises :class:`~tuner_core.errors.StorageUnavailable`,
one line naming it and why. Opening a SQLite storage creates its file: a reader asks
:func:`storage_exists` first.
"""

from __future__ import annotations

import contextlib
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
from tuner_core.storage.reconnecting import ReconnectingStorage
from tuner_core.storage.records import amend_user_attrs
from tuner_core.storage.retries import retry_callback

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
        # server together. A process keeps one between its calls (SQLAlchemy's default
        # pool kept up to five: about two per worker, bench/storage_load.py) and opens more
        # while its threads need them at once, without a cap: each device's thread waits
        # for the budget lock on a connection, and the lock's holder needs one more.
        engine_kwargs = {"pool_pre_ping": True, "pool_size": 1, "max_overflow": -1}
    opt = config.optimization

    def record_worker_lost(study: optuna.Study, trial: FrozenTrial, retry: int | None) -> None:
        # Optuna has failed the trial already; its record is completed afterwards.
        amend_user_attrs(storage, study.study_name, trial.number, worker_lost(retry))

    try:
        with _first_use_lock(url), warnings.catch_warnings():
            # Heartbeats are flagged experimental; see tuner_core.storage.retries.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = ReconnectingStorage(
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
    tuner_core.tracking.store). A PostgreSQL database is created by its administrator."""
    path = sqlite_file(url)
    if path is None:
        return contextlib.nullcontext()
    path.parent.mkdir(parents=True, exist_ok=True)
    return file_lock(path.with_name(f"{path.name}.init.lock"))
