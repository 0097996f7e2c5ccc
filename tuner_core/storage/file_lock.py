"""An exclusive lock on a file, across the processes of one machine (``flock``).

The kernel lets go of the lock when the file is closed or its process dies, so a
killed process never leaves it held.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if need be) for the block; wait for it."""
    with open(path, "ab") as file:
        fcntl.flock(file, fcntl.LOCK_EX)  # released when the file closes
        yield
