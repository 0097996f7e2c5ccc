"""One trainer (``python -m train``): start it, follow its events, end it.

The trainer's stdout carries one JSON event per line (see ``train/tacotron2/events.py``); a
reader thread turns them into a queue so the tuner can wait for the next event
with a timeout and meanwhile look at other things (a stop request). stderr goes
to the trainer's log, ``RUN_DIR/train.log`` (the trainer, started with
``--no-log-file``, does not write it too); its tail is what a crash report shows.

A worker starts its trainers warm: a :class:`TrainerLauncher` (``python -m
train.launcher``) has imported the trainer once and forks one process per trainer, so a
trial starts training without seconds of imports. Without one (or should it die), the
trainer is started cold, as its own ``python -m train``. A worker with several devices
shares one launcher among their trainers (:class:`SharedLauncher`).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import signal
import socket
import subprocess
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TextIO

from train.launcher import MAX_MESSAGE, die_with_parent
from train.tacotron2.events import LOG_FILE, parse

log = logging.getLogger(__name__)


class LauncherError(RuntimeError):
    """The launcher could not start a trainer (it died, or failed to import the trainer)."""


class LaunchedProgram:
    """A program (a trainer or a render) forked by a :class:`TrainerLauncher`, seen through
    the part of :class:`subprocess.Popen`'s interface that the tuner uses."""

    def __init__(self, pid: int, status: int):
        self.pid = pid
        self.returncode: int | None = None
        self._status = status  # the launcher writes the exit code here when the trainer ends

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._status], [], [], 0)[0]:
            self._collect()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._status], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(f"process {self.pid}", timeout or 0.0)
            self._collect()
        assert self.returncode is not None
        return self.returncode

    def _collect(self) -> None:
        code = os.read(self._status, 64)
        os.close(self._status)
        if code:
            self.returncode = int(code)
        else:  # the launcher died first; the trainer got SIGTERM from the kernel
            log.warning("the launcher of trainer %d died; its exit code is unknown", self.pid)
            self.returncode = -signal.SIGTERM

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class TrainerLauncher:
    """A worker's ``python -m train.launcher``: it imports the trainer as soon as it is
    created, then starts each trainer by forking (see :mod:`train.launcher`)."""

    def __init__(self, python: str, cwd: Path, env: dict[str, str]):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # The launcher dies with the worker (PR_SET_PDEATHSIG), but the kernel sends that
        # signal when the *thread* that started it ends, and a worker's devices are threads
        # that end one by one: a thread of its own starts it and lives until it is closed.
        started: Future[subprocess.Popen[bytes]] = Future()
        self._closed = threading.Event()

        def start_and_stay() -> None:
            try:
                started.set_result(subprocess.Popen(
                    [python, "-m", "train.launcher", str(theirs.fileno())],
                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, cwd=cwd, env=env, preexec_fn=die_with_parent))
            except BaseException as error:  # raised in the caller's thread below
                started.set_exception(error)
                return
            self._closed.wait()

        threading.Thread(target=start_and_stay, name="trainer-launcher", daemon=True).start()
        try:
            self._proc = started.result()
        finally:
            theirs.close()
        self._sock = ours
        self._ready = False
        self._lock = threading.Lock()  # one request and its answer at a time

    def start(self, args: Sequence[str], cwd: Path, env: dict[str, str], stdout: int,
              stderr: int, program: str = "train", nice: int = 0) -> LaunchedProgram:
        """Fork ``python -m PROGRAM ARGS`` (``train`` or ``train.render``) with these stdout
        and stderr file descriptors, ``nice`` steps below the launcher's priority."""
        status_r, status_w = os.pipe()
        request = json.dumps({"program": program, "argv": list(args), "cwd": str(cwd),
                              "env": env, "nice": nice}).encode()
        try:
            with self._lock:
                if not self._ready:  # the first start waits for the imports
                    self._answer()
                    self._ready = True
                socket.send_fds(self._sock, [request], [stdout, stderr, status_w])
                answer = self._answer()
        except (OSError, LauncherError):
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        if "pid" not in answer:
            os.close(status_r)
            raise LauncherError(answer.get("error", "no pid"))
        return LaunchedProgram(answer["pid"], status_r)

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def _answer(self) -> dict[str, Any]:
        message = self._sock.recv(MAX_MESSAGE)
        if not message:
            raise LauncherError(f"the launcher exited with code {self._proc.wait()}")
        return json.loads(message)

    def close(self) -> None:
        """End the launcher (its running trainers get SIGTERM from the kernel)."""
        self._sock.close()
        self._proc.wait()
        self._closed.set()


class SharedLauncher:
    """A worker's one :class:`TrainerLauncher`, shared by its trainers (one per device):
    started with the first trainer, so a worker that trains nothing pays no imports, and
    replaced should it die."""

    def __init__(self, python: str, cwd: Path, env: dict[str, str]):
        self._args = (python, cwd, env)
        self.current: TrainerLauncher | None = None
        self._lock = threading.Lock()  # two devices' trainers starting at once start one

    def ready(self) -> TrainerLauncher:
        with self._lock:
            if self.current is not None and not self.current.alive:
                log.warning("the trainer launcher exited; starting a new one")
                self.current.close()
                self.current = None
            if self.current is None:
                self.current = TrainerLauncher(*self._args)
            return self.current

    def close(self) -> None:
        """End the launcher; call when the worker leaves."""
        with self._lock:
            if self.current is not None:
                self.current.close()
                self.current = None


def launch(program: str, args: Sequence[str], *, python: str, cwd: Path,
           env: dict[str, str], stderr: int, launcher: TrainerLauncher | None,
           nice: int = 0) -> tuple[subprocess.Popen | LaunchedProgram, TextIO]:
    """Start ``python -m PROGRAM ARGS``, forked by ``launcher`` if there is one and it
    works, else cold; the process and its stdout, line by line."""
    if launcher is not None:
        read, write = os.pipe()
        try:
            process = launcher.start(args, cwd, env, stdout=write, stderr=stderr,
                                     program=program, nice=nice)
        except (OSError, LauncherError) as exc:
            log.warning("starting python -m %s cold: its launcher failed (%s)", program, exc)
            os.close(read)
        else:
            return process, open(read, buffering=1)  # closed by its reader
        finally:
            os.close(write)  # the child holds it: its end is the child's end

    def prepare_child() -> None:
        die_with_parent()
        os.nice(nice)

    cold = subprocess.Popen([python, "-m", program, *args], stdout=subprocess.PIPE,
                            stderr=stderr, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                            text=True, bufsize=1, preexec_fn=prepare_child)
    assert cold.stdout is not None
    return cold, cold.stdout


class TrainerProcess:
    """A running trainer; iterate :meth:`events` until it ends, then read :attr:`returncode`."""

    _EOF = object()

    def __init__(self, args: Sequence[str], run_dir: Path, *, python: str, cwd: Path,
                 env: dict[str, str], launcher: TrainerLauncher | None = None,
                 program: str = "train"):
        """Start ``python -m PROGRAM ARGS`` (``train``, or ``train.replay``), forked by
        ``launcher`` if there is one."""
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = run_dir / LOG_FILE
        # Appended across adaptation restarts; closed when the trainer's stdout ends.
        self._stderr = open(self.log_path, "ab")  # noqa: SIM115
        log.debug("starting python -m %s %s", program, " ".join(args))
        self._proc, self._stdout = launch(program, args, python=python, cwd=cwd, env=env,
                                          stderr=self._stderr.fileno(), launcher=launcher)
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
        with self._stdout:
            for line in self._stdout:
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
