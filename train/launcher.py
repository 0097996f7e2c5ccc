"""A warm trainer launcher: one process that has imported the trainer, forking one per run.

    python -m train.launcher SOCKET_FD      (started by the tuner, see tuner_core.process)

Starting ``python -m train`` costs seconds of imports (torch, librosa's filters and
scipy.signal, torch's compiler stack that the optimiser pulls in, matplotlib) before
the first step, at every trial and every adaptation restart. This process pays them
once per worker: it imports them and then waits on a Unix socket. For each request
(the program, ``train`` or ``train.render``, its argument list, environment, working
directory and niceness, with its stdout, stderr and a status pipe passed as file
descriptors) it forks a child that runs the program's ``main`` exactly as ``python -m
train`` (or ``python -m train.render``) would, answers with the child's pid, and when
the child ends writes its exit code (negative: the signal that ended it, as
:mod:`subprocess` reports it) to the status pipe.

Each trainer is still its own process: it may be sent SIGTERM to save and exit, and it
dies with the launcher (``PR_SET_PDEATHSIG``), which dies with the tuner. The launcher
only imports: torch's thread pools do not survive a fork, so nothing runs before it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import select
import signal
import socket
import sys
import traceback
from typing import Any

# Enough for a request (argv with the hyperparameters' JSON, and an environment).
MAX_MESSAGE = 1 << 20
# The programs a launcher runs: python -m NAME → the module whose main() it calls.
PROGRAMS = {"train": "train.__main__", "train.render": "train.render",
            "train.replay": "train.replay", "train.evaluate": "train.evaluate"}
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies (even by SIGKILL),
    so that a trainer saves its checkpoint and exits rather than training on unsupervised."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the orphan runs on
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def preload() -> None:
    """Import what a trainer imports before its first step (measured with -X importtime
    and cProfile: most of it is lazy, in the mel filters and in the optimiser)."""
    import librosa.filters  # noqa: F401  (librosa's lazy loader: scipy.signal, numba)
    import torch._dynamo  # noqa: F401  (imported by torch.optim on the first optimiser)

    import train.__main__  # the trainer, its model, data, plots and audio
    import train.render  # noqa: F401  (the plots of stopped trials, drawn afterwards)


def _run_child(request: dict[str, Any], fds: list[int], server_pid: int) -> int:
    """In the forked child: become ``python -m PROGRAM`` with the request's arguments."""
    stdout, stderr = fds[0], fds[1]
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    for fd in (stdout, stderr, devnull):
        os.close(fd)
    die_with_parent()
    if os.getppid() != server_pid:  # the launcher died before the line above
        return 128 + signal.SIGTERM
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.nice(request["nice"])
    import torch

    # Torch read OMP_NUM_THREADS when the launcher imported it; apply the trainer's own.
    if threads := os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(threads))
    sys.argv = [f"python -m {request['program']}", *request["argv"]]
    return importlib.import_module(PROGRAMS[request["program"]]).main(request["argv"])


def _fork_trainer(request: dict[str, Any], fds: list[int], keep_closed: list[int]) -> int:
    """Fork a trainer for ``request``; its pid. ``keep_closed``: the launcher's own fds."""
    server_pid = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        for fd in keep_closed:
            with contextlib.suppress(OSError):
                os.close(fd)
        code = _run_child(request, fds, server_pid)
    except SystemExit as exc:  # argparse's usage errors, as python -m train exits
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve(sock: socket.socket) -> None:
    """Answer requests until the tuner closes its end of ``sock``."""
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake select() via wake_w
    status_fds: dict[int, int] = {}  # child pid → the write end of its status pipe

    while True:
        ready, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
            _reap(status_fds)
        if sock in ready:
            message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 3)
            if not message:
                return
            request = json.loads(message)
            own = [sock.fileno(), wake_r, wake_w, *status_fds.values(), fds[2]]
            try:
                pid = _fork_trainer(request, fds, keep_closed=own)
            except OSError as exc:
                os.close(fds[2])
                sock.send(json.dumps({"error": str(exc)}).encode())
            else:
                status_fds[pid] = fds[2]
                sock.send(json.dumps({"pid": pid}).encode())
            finally:
                os.close(fds[0])
                os.close(fds[1])


def _reap(status_fds: dict[int, int]) -> None:
    """Collect every ended child and write its exit code to its status pipe."""
    while status_fds:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        fd = status_fds.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(OSError):  # the tuner stopped listening
                os.write(fd, str(os.waitstatus_to_exitcode(status)).encode())
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m train.launcher SOCKET_FD (started by the tuner)",
              file=sys.stderr)
        return 2
    die_with_parent()
    sock = socket.socket(fileno=int(argv[0]))
    preload()
    sock.send(b'{"ready": true}')
    serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
