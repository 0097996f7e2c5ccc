"""A throwaway PostgreSQL server for tests, from the machine's own PostgreSQL binaries.

The cluster lives in a temporary folder, listens only on a Unix socket there, and is
removed afterwards. PostgreSQL refuses to run as root, so under root it runs as the
``postgres`` system user that the server package creates.

Two ways to get one:

* the ``postgres`` pytest fixture (tests/conftest.py) starts a cluster for the session;
* ``python3 -m tests.postgres COMMAND...`` starts one, runs COMMAND with
  ``TEST_POSTGRES_HOST`` and ``TEST_POSTGRES_PORT`` set to it, and removes it. CI runs
  ``make test`` so, and the fixture then uses that cluster and never skips.

This module uses the standard library only: CI starts the cluster before the
virtual environment exists.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.deadlines import scaled

HOST_VARIABLE = "TEST_POSTGRES_HOST"
PORT_VARIABLE = "TEST_POSTGRES_PORT"
PORT = 54329  # only names the socket file; nothing listens on TCP


@dataclass(frozen=True)
class PostgresCluster:
    """A running cluster reached through the Unix socket in ``host`` (a folder)."""

    host: str
    port: int = PORT
    max_connections: int = 200

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URL of ``database`` as the superuser ``postgres``."""
        return f"{driver}://postgres@/{database}?host={self.host}&port={self.port}"

    def create_database(self, name: str) -> str:
        """Create the empty database ``name``; its SQLAlchemy URL."""
        import psycopg  # the tests' virtual environment has it; CI's bootstrap does not

        with psycopg.connect(host=self.host, port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server as a restart or a failover does: its sessions are cut."""
        _pg_ctl(Path(self.host), "-m", "fast", "stop")

    def start(self) -> None:
        """Start the stopped server again, as it was."""
        _start(Path(self.host), self.port, self.max_connections)

    @classmethod
    def from_environment(cls) -> PostgresCluster | None:
        """The cluster ``python3 -m tests.postgres`` started around this process, if any."""
        host = os.environ.get(HOST_VARIABLE)
        return cls(host, int(os.environ.get(PORT_VARIABLE, PORT))) if host else None


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((str(v / name) for v in versions if (v / name).exists()), None)


def available() -> bool:
    return all(_binary(name) for name in ("initdb", "pg_ctl"))


def _as_user() -> list[str]:
    """PostgreSQL refuses to run as root: then it runs as the postgres system user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _pg_ctl(folder: Path, *arguments: str) -> None:
    subprocess.run([*_as_user(), _binary("pg_ctl"), "-D", str(folder / "data"), *arguments],
                   check=True, capture_output=True, text=True)


def _start(folder: Path, port: int = PORT, max_connections: int = 200) -> None:
    _pg_ctl(folder, "-l", str(folder / "server.log"), "-w",
            "-t", str(round(scaled(60))), "start",  # pg_ctl's own default deadline, scaled
            "-o", f"-c listen_addresses='' -k {folder} -p {port} "
                  f"-c max_connections={max_connections}")


@contextlib.contextmanager
def postgres_cluster(max_connections: int = 200) -> Iterator[PostgresCluster]:
    """Start a cluster in a temporary folder; stop and remove it on exit. The default
    ``max_connections`` leaves room for several workers, an MLflow server and the test
    itself at once."""
    folder = Path(tempfile.mkdtemp(prefix="pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
    data = folder / "data"
    try:
        subprocess.run([*_as_user(), _binary("initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
        _start(folder, max_connections=max_connections)
        yield PostgresCluster(str(folder), max_connections=max_connections)
    finally:
        if data.exists():
            subprocess.run([*_as_user(), _binary("pg_ctl"), "-D", str(data), "-m",
                            "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def main(command: list[str]) -> int:
    """Run ``command`` beside a throwaway cluster; its exit status."""
    if not command:
        print("usage: python3 -m tests.postgres COMMAND [ARG...]", file=sys.stderr)
        return 2
    if not available():
        print("error: no PostgreSQL server binaries (initdb, pg_ctl) on this machine; "
              "install the postgresql package", file=sys.stderr)
        return 2
    with postgres_cluster() as cluster:
        environ = os.environ | {HOST_VARIABLE: cluster.host, PORT_VARIABLE: str(cluster.port)}
        return subprocess.run(command, env=environ).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
