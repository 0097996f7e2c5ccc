"""Plots and audio of stopped trials, drawn after the fact, off the critical path.

A trainer stopped by the tuner (pruned, early-stopped, stopped by the user) exits as
soon as it has saved its checkpoint: drawing plots and speaking a sample between
SIGTERM and exit would only delay the next trial. When its run was meant to end with
them (``artifacts=end``), :class:`BackgroundRenders` draws them from the trial's best
checkpoint with ``python -m train.render``, in a low-priority process beside the next
trial, and hands each file to the listener (MLflow tracking logs it to the trial's run).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from train.events import parse

log = logging.getLogger(__name__)

NICENESS = 10  # below the trainers, which the worker starts at its own priority


class BackgroundRenders:
    """Start renders, and wait for them all before the worker leaves."""

    def __init__(self, command_prefix: list[str], env: dict[str, str], cwd: Path,
                 on_artifact: Callable[[int, Path], None]):
        self._prefix = command_prefix  # python -m train.render --data ... --cache-dir ...
        self._env = env
        self._cwd = cwd
        self._on_artifact = on_artifact
        self._threads: list[threading.Thread] = []

    def start(self, trial_number: int, checkpoint: Path) -> None:
        """Draw ``checkpoint``'s plots into its run folder's ``artifacts/``."""
        # Retention may delete the trial's checkpoints (*.pt) the moment it is recorded;
        # the render reads its own link to the file, removed when it is done.
        kept = checkpoint.with_name(f"{checkpoint.name}.rendering")
        kept.unlink(missing_ok=True)
        try:
            os.link(checkpoint, kept)
        except OSError:  # a file system without hard links
            shutil.copyfile(checkpoint, kept)
        process = subprocess.Popen([*self._prefix, "--checkpoint", str(kept)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   cwd=self._cwd, env=self._env,
                                   preexec_fn=lambda: os.nice(NICENESS))
        thread = threading.Thread(target=self._follow, args=(trial_number, process, kept),
                                  name=f"render-{trial_number}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _follow(self, trial_number: int, process: subprocess.Popen, kept: Path) -> None:
        out, err = process.communicate()
        kept.unlink(missing_ok=True)
        if process.returncode != 0:
            log.warning("trial %d: drawing its plots failed (exit %d): %s", trial_number,
                        process.returncode, err.strip().splitlines()[-1:] or "")
            return
        for event in filter(None, map(parse, out.splitlines())):
            if event["event"] == "artifact":
                self._on_artifact(trial_number, Path(event["path"]))

    def wait(self) -> None:
        """Until every render started so far has ended (and its files were handed on)."""
        for thread in self._threads:
            thread.join()
        self._threads.clear()
