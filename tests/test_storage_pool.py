"""How many PostgreSQL connections a process keeps: none between its storage calls, as many
as its threads use at once while they call. PostgreSQL allows 100 connections by default;
workers that kept connections (SQLAlchemy's default pool keeps five, a pool of one still
one each) filled it with a few dozen workers, and past it deadlocked: the budget lock's
holder waited for a connection that the waiting workers kept idle (bench/storage_load.py)."""

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


def test_a_process_keeps_no_connection_between_its_storage_calls(postgres, postgres_url,
                                                                  tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"dataset_path": str(tmp_path), "storage": postgres_url,
                                    "state_dir": str(tmp_path / "state")}))
    storage = open_storage(load_config(path))
    database = storage.engine.url.database
    # More at once than SQLAlchemy's default pool allows (15): with a cap, a thread that
    # holds the budget lock and calls the storage would wait for a connection that the
    # other threads might not give back.
    with contextlib.ExitStack() as held:
        for _ in range(16):
            held.enter_context(storage.engine.connect())
        assert open_connections(postgres, database, settled=16) == 16
    storage.get_all_studies()
    assert open_connections(postgres, database, settled=0) == 0
