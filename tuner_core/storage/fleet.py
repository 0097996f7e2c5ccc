"""The fleet: every worker that works on the storage's studies, as the workers record it.

Each worker (standing or not, on any machine) keeps one row in a table of its own,
``smart_tuner_workers``, in the study storage's database: its host, pid, devices, whether
it follows (a standing worker), its current trials (study, number, device) and its last
heartbeat. It writes the row when it starts, when one of its trials starts or ends, and
once per heartbeat interval (``optimization.heartbeat_interval_s``, a minute by default)
in between; it deletes the row when it leaves. A row whose heartbeat is older than the
grace period (``heartbeat_grace_s``, twice the interval by default) is a lost worker
(killed, or its machine gone); any worker that starts drops the rows lost for a day.

Why a table of our own, not a reserved study's attributes: a reserved study would show
among the studies everywhere they are listed (the latest study, the notifications, the
``studies`` command) unless each of them skipped it, and its attributes would be rows
keyed by name anyway. One row per worker, updated in place, is the smallest write: one
``UPDATE`` per worker per interval, whatever the number of studies or trials. Optuna
never touches a table it does not know, and the table is created by the first worker.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

import sqlalchemy
from sqlalchemy import Boolean, Column, Float, Integer, String, Text
from sqlalchemy.engine import Engine

from tuner_core.storage.reconnecting import connection_lost, riding_out

log = logging.getLogger(__name__)

_METADATA = sqlalchemy.MetaData()
WORKERS = sqlalchemy.Table(
    "smart_tuner_workers", _METADATA,
    Column("worker", String(255), primary_key=True),  # host:pid
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("devices", Text, nullable=False),  # a JSON list of device names
    Column("following", Boolean, nullable=False),
    Column("trials", Text, nullable=False),  # a JSON list of {"study", "number", "device"}
    Column("last_seen", Float, nullable=False),  # Unix time of its last heartbeat
)

# A lost worker's row is dropped after this long: long enough to be seen and asked about.
DROP_AFTER_S = 24 * 3600


class FleetMember:
    """This worker's row: ``with FleetMember(...) as member:`` while the worker works."""

    def __init__(self, engine: Engine, devices: list[str], following: bool,
                 interval_s: float):
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.devices = devices
        self.following = following
        self._engine = engine
        self._interval_s = interval_s
        self._trials: dict[str, dict[str, Any]] = {}  # by device
        self._lock = threading.Lock()  # one write at a time; trials change meanwhile
        self._leaving = threading.Event()
        self._beat = threading.Thread(target=self._beating, daemon=True, name="fleet-heartbeat")

    @property
    def key(self) -> str:
        return f"{self.host}:{self.pid}"

    def __enter__(self) -> FleetMember:
        riding_out(self._join)  # a worker waits for the database as its storage calls do
        self._beat.start()
        return self

    def _join(self) -> None:
        try:
            _METADATA.create_all(self._engine, checkfirst=True)
        except sqlalchemy.exc.SQLAlchemyError as error:
            # Workers that start together on a new database race to create the table, and
            # PostgreSQL's CREATE TABLE fails when another is made at the same moment.
            if connection_lost(error) or not sqlalchemy.inspect(self._engine).has_table(
                    WORKERS.name):
                raise
        with self._engine.begin() as connection:
            connection.execute(WORKERS.delete().where(
                (WORKERS.c.worker == self.key)
                | (WORKERS.c.last_seen < time.time() - DROP_AFTER_S)))
            connection.execute(WORKERS.insert().values(self._row()))

    def __exit__(self, *exc_info: object) -> None:
        self._leaving.set()
        self._beat.join()
        try:
            with self._lock, self._engine.begin() as connection:
                connection.execute(WORKERS.delete().where(WORKERS.c.worker == self.key))
        except sqlalchemy.exc.SQLAlchemyError as error:  # left as lost; dropped in a day
            log.warning("could not remove this worker from the fleet: %s", error)

    def trial_started(self, device: str, study: str, number: int) -> None:
        self._trials[device] = {"study": study, "number": number, "device": device}
        self._write()

    def trial_ended(self, device: str) -> None:
        self._trials.pop(device, None)
        self._write()

    def _row(self) -> dict[str, Any]:
        return {"worker": self.key, "host": self.host, "pid": self.pid,
                "devices": json.dumps(self.devices), "following": self.following,
                "trials": json.dumps(list(self._trials.values())), "last_seen": time.time()}

    def _write(self) -> None:
        """Update the row now; while the database is away, the next heartbeat will."""
        try:
            with self._lock, self._engine.begin() as connection:
                connection.execute(WORKERS.update().where(WORKERS.c.worker == self.key)
                                   .values(self._row()))
        except sqlalchemy.exc.SQLAlchemyError as error:
            if connection_lost(error) is None:
                raise
            log.debug("fleet heartbeat skipped: %s", error)

    def _beating(self) -> None:
        while not self._leaving.wait(self._interval_s):
            self._write()


def fleet(engine: Engine, grace_s: float) -> list[dict[str, Any]]:
    """Every worker in the fleet, by host and pid: ``host``, ``pid``, ``devices``,
    ``following``, ``trials`` (``study``, ``number``, ``device``), ``last_seen``, ``idle``
    (no trial), and ``lost`` (no heartbeat for ``grace_s``)."""
    if not sqlalchemy.inspect(engine).has_table(WORKERS.name):  # no worker has started yet
        return []
    with engine.connect() as connection:
        rows = connection.execute(WORKERS.select().order_by(WORKERS.c.host, WORKERS.c.pid))
        now = time.time()
        workers = []
        for row in rows:
            trials = json.loads(row.trials)
            workers.append({"host": row.host, "pid": row.pid, "devices": json.loads(row.devices),
                            "following": row.following, "trials": trials,
                            "last_seen": row.last_seen, "idle": not trials,
                            "lost": now - row.last_seen > grace_s})
    return workers
