"""Riding out a database restart: storage calls that wait for PostgreSQL to come back.

A worker's trial lasts hours; a PostgreSQL restart (an upgrade, a failover, a moved pod)
lasts seconds. Without help, the first storage call in that window raises, the trial's
objective fails and Optuna records the trial as failed. :class:`ReconnectingStorage` is
Optuna's RDB storage whose every call, once :attr:`~ReconnectingStorage.rides_out_outages`
is set (workers set it), waits with backoff while the database cannot be reached and
then goes on: the trainer keeps training meanwhile, its events queue up, and the trial
survives. The worker says so in one line when the database goes away and one when it is
back. A call opens a connection of its own (no pool: tuner_core.storage.opening), so no
dead connection is ever reused.

Only a lost connection is waited out (SQLAlchemy's ``OperationalError`` or
``InterfaceError``, somewhere in the cause chain); any other error raises as before. A
call whose commit reached the server just as the connection dropped is sent again:
setting an attribute or a value again is harmless, and a new trial created twice would
need the server to die in the instant between its commit and the answer.

Readers (the bot, the CLI) leave it unset: they report the outage at once instead.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy

log = logging.getLogger(__name__)

# Backoff between attempts while the database is away: doubling, at most this long.
FIRST_WAIT_S = 0.5
LONGEST_WAIT_S = 30.0

# Every call a study, a trial, the heartbeat thread and the retry of stale trials make,
# the private ones Optuna's cache layer (optuna.storages._CachedStorage) makes included.
RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_trial_user_attrs",
    "get_trial_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
    "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial_id_from_study_id_trial_number",
    "get_trial", "get_all_trials", "get_best_trial", "get_n_trials", "record_heartbeat",
    "_get_stale_trial_ids", "_create_new_trial", "_get_trials", "_set_trial_param",
    "_get_best_trial_id",
)


def connection_lost(error: BaseException) -> BaseException | None:
    """The database connection failing, if that is what ``error`` is (or its cause)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def no_free_connection(error: BaseException) -> bool:
    """Whether ``error`` is PostgreSQL refusing a connection because all of its
    ``max_connections`` are taken (SQLSTATE 53300, which a refused connection does not
    carry: its message tells)."""
    lost = connection_lost(error)
    text = str(getattr(lost, "orig", None) or lost or "")
    return "too many clients" in text or "connection slots are reserved" in text


class Outage:
    """Whether the database is away, shared by every thread of the process, so that an
    outage is told once (not by each thread that meets it) and its end once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None
        # Set when the worker leaves (SIGTERM): a call waiting for the database then fails
        # at once, so that a worker whose database never comes back still leaves.
        self.given_up = threading.Event()

    def began(self, lost: BaseException) -> None:
        """``lost``: the connection's error (see :func:`connection_lost`)."""
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()
                cause = str(getattr(lost, "orig", None) or lost).strip().splitlines()
                log.warning("the study storage is unreachable (%s); reconnecting with backoff",
                            cause[0] if cause else type(lost).__name__)

    def ended(self) -> None:
        with self._lock:
            if self._since is not None:
                log.warning("the study storage is reachable again after %.0f s",
                            time.monotonic() - self._since)
                self._since = None


OUTAGE = Outage()


def riding_out(call: Callable[[], Any], on_retry: Callable[[], None] = lambda: None) -> Any:
    """``call()``, attempted again with backoff for as long as the database is away, or
    until the worker leaves (:attr:`Outage.given_up`): then the call's error is raised."""
    def outage(error: BaseException) -> None:
        OUTAGE.began(connection_lost(error))
        on_retry()

    result = with_backoff(call, lambda error: connection_lost(error) is not None, outage)
    OUTAGE.ended()
    return result


def with_backoff(call: Callable[[], Any], waits_for: Callable[[BaseException], bool],
                 on_wait: Callable[[BaseException], None]) -> Any:
    """``call()``, attempted again while it raises an error that ``waits_for``, after
    ``on_wait(error)`` and a wait that doubles from :data:`FIRST_WAIT_S` to at most
    :data:`LONGEST_WAIT_S`; once the worker leaves (:attr:`Outage.given_up`), the error
    is raised at once."""
    wait = FIRST_WAIT_S
    while True:
        try:
            return call()
        except Exception as error:
            if not waits_for(error) or OUTAGE.given_up.is_set():
                raise
            on_wait(error)
            if OUTAGE.given_up.wait(wait):
                raise
            wait = min(2 * wait, LONGEST_WAIT_S)


class ReconnectingStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage; with :attr:`rides_out_outages`, each call waits for the
    database to come back rather than fail."""

    rides_out_outages = False


def _ridden_out(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: ReconnectingStorage, *args: Any, **kwargs: Any) -> Any:
        if not self.rides_out_outages:
            return method(self, *args, **kwargs)
        # A session whose connection died is discarded; the next call opens a fresh one.
        return riding_out(lambda: method(self, *args, **kwargs), self.scoped_session.remove)
    return call


for _name in RETRIED:
    setattr(ReconnectingStorage, _name, _ridden_out(getattr(optuna.storages.RDBStorage, _name)))
