"""Plots, audio and listening evaluations made beside the training, off the critical path.

A trainer stopped by the tuner (pruned, early-stopped, stopped by the user) exits as
soon as it has saved its checkpoint: drawing plots and speaking a sample between
SIGTERM and exit would only delay the next trial. When its run was meant to end with
them (``artifacts=end``), :class:`BackgroundRenders` draws them from the trial's best
checkpoint with ``python -m train.render``, in a low-priority process beside the next
trial (forked by the worker's launcher, see :mod:`tuner_core.trial.process`; its log goes to the
run's ``train.log``), and hands each file to the listener (MLflow tracking logs it to the
trial's run). The same draws a running trial's best checkpoint when it beats the study's
best so far (``trainer.render_new_best``), so a new best has its plots before it ends.
A completed trial's listening evaluation (``python -m train.evaluate``,
:mod:`tuner_core.trial.evaluation`) runs the same way.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from train.tacotron2.events import LOG_FILE, parse
from tuner_core.config.location import PROJECT_ROOT
from tuner_core.config.sections import Config
from tuner_core.trial.process import LaunchedProgram, TrainerLauncher, launch

log = logging.getLogger(__name__)

NICENESS = 10  # below the trainers, which the worker starts at its own priority


class BackgroundRenders:
    """Start renders, and wait for them all before the worker leaves."""

    def __init__(self, config: Config, env: dict[str, str],
                 on_artifact: Callable[[int, Path], None],
                 launcher: Callable[[], TrainerLauncher | None] = lambda: None):
        self._python = config.trainer.python
        self.data = config.dataset_path
        self._cache = config.state_dir / "mel_cache"
        self._env = env
        self._cwd = PROJECT_ROOT
        self._on_artifact = on_artifact
        self._launcher = launcher  # the worker's, which forks the render without imports
        self._threads: dict[int, list[threading.Thread]] = {}  # by trial number
        self._started = itertools.count()

    def busy(self, trial_number: int) -> bool:
        """Whether a render of this trial is still running."""
        return any(thread.is_alive() for thread in self._threads.get(trial_number, ()))

    def start(self, trial_number: int, checkpoint: Path) -> None:
        """Draw ``checkpoint``'s plots into its run folder's ``artifacts/``."""
        self.launch(trial_number, self.keep(checkpoint), "train.render",
                    ["--data", str(self.data), "--cache-dir", str(self._cache)],
                    "drawing its plots")

    def keep(self, checkpoint: Path) -> Path:
        """A link to ``checkpoint`` for a program to read, removed when it is done.

        Retention may delete the trial's checkpoints (*.pt) the moment it is recorded, and
        the trainer replaces best.pt as it improves.
        """
        kept = checkpoint.with_name(f"{checkpoint.name}.rendering{next(self._started)}")
        kept.unlink(missing_ok=True)
        try:
            os.link(checkpoint, kept)
        except OSError:  # a file system without hard links
            shutil.copyfile(checkpoint, kept)
        return kept

    def launch(self, trial_number: int, kept: Path, program: str, args: list[str], what: str,
               on_artifact: Callable[[int, Path], None] | None = None) -> threading.Thread:
        """Run ``python -m PROGRAM ARGS --checkpoint KEPT`` (a :meth:`keep` link) at low
        priority; each artifact it writes goes to ``on_artifact`` (default: the listener's),
        and a failure is logged as ``what`` failing. The thread that follows it, which ends
        once it has handed them on."""
        log_path = kept.with_name(LOG_FILE)
        with open(log_path, "ab") as stderr:
            process, stdout = launch(program, [*args, "--checkpoint", str(kept)],
                                     python=self._python, cwd=self._cwd, env=self._env,
                                     stderr=stderr.fileno(), launcher=self._launcher(),
                                     nice=NICENESS)
        thread = threading.Thread(target=self._follow,
                                  args=(trial_number, process, stdout, kept, log_path, what,
                                        on_artifact or self._on_artifact),
                                  name=f"{program}-{trial_number}", daemon=True)
        thread.start()
        self._threads.setdefault(trial_number, []).append(thread)
        return thread

    def hand_on(self, trial_number: int, path: Path) -> None:
        """Give the listener a file made for this trial."""
        self._on_artifact(trial_number, path)

    def _follow(self, trial_number: int, process: subprocess.Popen | LaunchedProgram,
                stdout: TextIO, kept: Path, log_path: Path, what: str,
                on_artifact: Callable[[int, Path], None]) -> None:
        with stdout:
            events = list(filter(None, map(parse, stdout)))
        code = process.wait()
        kept.unlink(missing_ok=True)
        if code != 0:
            with open(log_path, errors="replace") as log_file:
                last = deque(log_file, maxlen=1)
            log.warning("trial %d: %s failed (exit %d): %s", trial_number, what, code,
                        "".join(last).strip())
            return
        for event in events:
            if event["event"] == "artifact":
                on_artifact(trial_number, Path(event["path"]))

    def wait(self) -> None:
        """Until every render started so far has ended (and its files were handed on)."""
        for threads in self._threads.values():
            for thread in threads:
                thread.join()
        self._threads.clear()
