"""The study-wide lock under which a worker takes its next trial from the study's budget.

Any number of workers, on any number of machines, run one study. Before a worker
starts a trial it counts the trials left and then creates the trial: two storage
operations. Two workers doing both at once would each see the last trial left and
both start one. So a worker holds this lock from its count until its new trial is
in the storage, where every other worker's count sees it.

* PostgreSQL: a session-level advisory lock held on a connection of its own. A
  worker that dies drops its connection, and the lock goes with it: a killed worker
  never blocks the others. A waiting worker asks again and again
  (``pg_try_advisory_lock``) rather than queue in the server (``pg_advisory_lock``),
  and closes its connection between asks: a queued ask holds a connection for as
  long as it waits, and at a fleet's start every worker waits at once
  (bench/storage_load.py).
* SQLite: the database is on one machine, so an ``flock`` on a file beside it
  (one for all its studies); the kernel lets go of it when the process dies.

The lock is held for milliseconds per trial, never while a trial trains.
"""

from __future__ import annotations

import fcntl
import logging
import random
import time
from pathlib import Path
from typing import IO

import sqlalchemy
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

# The first key of the two-key advisory lock: names Smart Tuner's budget locks among
# any others taken in the same database. The second key is the study's id.
ADVISORY_NAMESPACE = 0x5354

# Between a waiting worker's asks for the lock: doubling from the first, at most the
# longest, each drawn within +-50 % so that workers that started together spread out.
FIRST_ASK_WAIT_S = 0.02
LONGEST_ASK_WAIT_S = 1.0


class BudgetLock:
    """A lock per study, across processes and machines; ``with lock: ...``.

    :meth:`release` may be called early, inside the ``with`` block, once the worker's
    trial exists; leaving the block then does nothing more.
    """

    def __init__(self, url: str, engine: Engine, study_id: int):
        self.study_id = study_id
        self._engine = engine
        self._lock_file_path = _lock_file(url)
        self._connection: Connection | None = None
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        """Wait until no other worker holds the lock of this study, then hold it."""
        if self._lock_file_path is not None:
            self._file = open(self._lock_file_path, "ab")  # noqa: SIM115 (held until release)
            fcntl.flock(self._file, fcntl.LOCK_EX)
            return
        wait = FIRST_ASK_WAIT_S
        while True:
            # The lock outlives any transaction: none is opened, so none is left idle.
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            held = connection.execute(
                sqlalchemy.text("SELECT pg_try_advisory_lock(:namespace, :study)"),
                {"namespace": ADVISORY_NAMESPACE, "study": self.study_id}).scalar_one()
            if held:
                self._connection = connection
                return
            connection.close()  # a waiting worker holds no connection between its asks
            if wait == FIRST_ASK_WAIT_S:
                log.debug("another worker holds the budget lock of study %d; asking until "
                          "it is free", self.study_id)
            time.sleep(wait * random.uniform(0.5, 1.5))
            wait = min(2 * wait, LONGEST_ASK_WAIT_S)

    def release(self) -> None:
        """Let the next worker take its trial; does nothing if not held."""
        if self._file is not None:
            self._file.close()  # closing the file drops the flock
            self._file = None
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.execute(
                    sqlalchemy.text("SELECT pg_advisory_unlock(:namespace, :study)"),
                    {"namespace": ADVISORY_NAMESPACE, "study": self.study_id})
                connection.close()
            except sqlalchemy.exc.SQLAlchemyError:
                # A connection in doubt must not go back to the pool still holding the
                # lock: dropping it makes the server let go of the lock.
                log.warning("could not unlock the budget lock of study %d; dropping its "
                            "connection instead", self.study_id, exc_info=True)
                connection.invalidate()

    def __enter__(self) -> BudgetLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _lock_file(url: str) -> Path | None:
    """The lock file of a SQLite database; None for PostgreSQL, which locks in the server."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(f"{url.removeprefix('sqlite:///')}.budget.lock")
