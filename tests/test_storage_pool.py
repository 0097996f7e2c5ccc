"""How many PostgreSQL connections a process keeps: one between its storage calls, more
only while its threads need them at once. PostgreSQL allows 100 connections by default;
a worker that kept every connection it ever needed at once (SQLAlchemy's default pool
keeps five) would fill them with a few dozen workers (bench/storage_load.py)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import psycopg
import yaml

from tests.deadlines import scaled
from tuner_core.config import load_config
from tuner_core.storage import open_storage


def open_connections(postgres, database: str, settled: int) -> int:
    """The connections open to ``database``, once they are ``settled`` or a few seconds
    have passed: a closed connection's server process leaves a moment after the close."""
    deadline = time.monotonic() + scaled(5)
    with psycopg.connect(host=postgres.host, port=postgres.port, user="postgres",
                         dbname="postgres", autocommit=True) as connection:
        while True:
            count = connection.execute("SELECT count(*) FROM pg_stat_activity "
                                       "WHERE datname = %s", (database,)).fetchone()[0]
            if count == settled or time.monotonic() > deadline:
                return count
            time.sleep(0.05)


def test_a_process_keeps_one_connection_between_its_storage_calls(postgres, postgres_url,
                                                                   tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"dataset_path": str(tmp_path), "storage": postgres_url,
                                    "state_dir": str(tmp_path / "state")}))
    storage = open_storage(load_config(path))
    database = storage.engine.url.database
    # A worker's busiest moment, on a 16-GPU machine: each device's thread waits for the
    # budget lock on a connection while the lock's holder makes a storage call, beside the
    # heartbeats. More than SQLAlchemy's default pool allows (15): with a cap, the holder
    # would wait for a connection that none of the waiting threads gives back.
    with contextlib.ExitStack() as held:
        for _ in range(16):
            held.enter_context(storage.engine.connect())
        assert open_connections(postgres, database, settled=16) == 16
    assert open_connections(postgres, database, settled=1) == 1
