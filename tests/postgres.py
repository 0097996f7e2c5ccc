"""A throwaway PostgreSQL server for tests, from the machine's own PostgreSQL binaries.

The cluster lives in a temporary folder, listens only on a Unix socket there, and is
removed afterwards. PostgreSQL refuses to run as root, so under root it runs as the
``postgres`` system user that the server package creates.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

PORT = 54329  # only names the socket file; nothing listens on TCP


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((str(v / name) for v in versions if (v / name).exists()), None)


def available() -> bool:
    return all(_binary(name) for name in ("initdb", "pg_ctl"))


@contextlib.contextmanager
def postgres_server(database: str = "smart_tuner") -> Iterator[str]:
    """Start a cluster; yield a SQLAlchemy URL of a fresh database in it."""
    folder = Path(tempfile.mkdtemp(prefix="pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, text=True)

    try:
        run(_binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(_binary("pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "start",
            "-o", f"-c listen_addresses='' -k {folder} -p {PORT}")
        run(_binary("createdb") or "createdb", "-h", str(folder), "-p", str(PORT), "-U",
            "postgres", database)
        yield f"postgresql+psycopg://postgres@/{database}?host={folder}&port={PORT}"
    finally:
        if data.exists():
            subprocess.run([*as_user, _binary("pg_ctl"), "-D", str(data), "-m", "immediate",
                            "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
