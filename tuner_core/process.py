"""One trainer subprocess (``python -m train``): start it, follow its events, end it.

The trainer's stdout carries one JSON event per line (see ``train/events.py``); a
reader thread turns them into a queue so the tuner can wait for the next event
with a timeout and meanwhile look at other things (a stop request). stderr goes
to the trainer's log, ``RUN_DIR/train.log`` (the trainer, started with
``--no-log-file``, does not write it too); its tail is what a crash report shows.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import queue
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from train.events import LOG_FILE, parse

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If the tuner itself is killed (even with SIGKILL), the kernel sends the trainer
    # SIGTERM, so it saves its checkpoint and exits instead of training on unsupervised.
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the orphan runs on
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class TrainerProcess:
    """A running trainer; iterate :meth:`events` until it ends, then read :attr:`returncode`."""

    _EOF = object()

    def __init__(self, command: Sequence[str], run_dir: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = run_dir / LOG_FILE
        # Appended across adaptation restarts; closed when the trainer's stdout ends.
        self._stderr = open(self.log_path, "ab")  # noqa: SIM115
        log.debug("starting %s", " ".join(command))
        self._proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=self._stderr,
                                      stdin=subprocess.DEVNULL, cwd=cwd, env=env, text=True,
                                      bufsize=1, preexec_fn=_die_with_parent)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"trainer-{self._proc.pid}")
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            event = parse(line)
            if event is not None:
                self._queue.put(event)
        self._queue.put(self._EOF)

    def events(self, poll_s: float = 1.0) -> Iterator[dict[str, Any] | None]:
        """Each event as it arrives, and ``None`` every ``poll_s`` without one.

        The ``None`` ticks let the caller check other conditions while a long
        epoch runs. Ends when the trainer closes its stdout (it has exited).
        """
        while True:
            try:
                item = self._queue.get(timeout=poll_s)
            except queue.Empty:
                yield None
                continue
            if item is self._EOF:
                self._proc.wait()
                self._stderr.close()
                return
            yield item

    def terminate(self, grace_s: float) -> int:
        """SIGTERM (the trainer saves and exits), SIGKILL after ``grace_s``; the exit code."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("trainer %d ignored SIGTERM for %.0fs; killing it", self.pid, grace_s)
                self._proc.kill()
                self._proc.wait()
        return self._proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the trainer's log, for a crash report."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
