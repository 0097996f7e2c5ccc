"""A completed trial judged as a listener would: ``python -m train.evaluate`` on its best
checkpoint (the ``evaluation`` block of the config).

The summary (``listening``, a user attribute of the trial: stop rate, length ratio, CER
beside the recordings' and their ratio, MCD, utterances with skipped or repeated words and
which) comes from the held-out and hard sentences of a corpus made by ``train.corpus``, or,
where the dataset has no ``heldout.csv``, from the first ``evaluation.sentences`` utterances
of the trial's validation split (the summary's ``judged_on`` names them).

When it runs:

- **beside the next trial** (the default), as the trial's plots are
  (:class:`~tuner_core.trial.rendering.BackgroundRenders`): the trial is recorded at once, and
  its evaluation, once done, is written onto it (a finished trial's record is amended,
  :mod:`tuner_core.storage.records`) and handed to the listeners as the ``listening.json``
  artifact (MLflow logs its metrics to the trial's run and to its registered version);
- **before the trial is recorded**, on the critical path by necessity, when its value or
  its registration waits on it: ``optimization.objective_metric`` is one of its metrics
  (the trial's value is then the evaluation's), or ``registry.requirements`` are set (a
  version is registered only if it passes them). Its summary is then among the
  attributes the trial ends with, beside ``requirements_unmet`` (the requirements it
  fails, when any are set). Should it fail, a listened objective's value is NaN, which
  Optuna records as a failed trial.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import optuna

from tuner_core.config.sections import Config
from tuner_core.rules.requirements import unmet
from tuner_core.storage.attributes import LISTENING_ATTR, REQUIREMENTS_ATTR
from tuner_core.storage.opening import open_storage
from tuner_core.storage.records import amend_user_attrs
from tuner_core.trial.rendering import BackgroundRenders

log = logging.getLogger(__name__)

LISTENING_FILE = "listening.json"  # in the run folder's artifacts/


def read_listening(path: Path) -> dict[str, Any] | None:
    """The summary ``train.evaluate --json`` wrote, or None if it is unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.warning("cannot read the listening evaluation %s: %s", path, error)
        return None


class ListeningEvaluations:
    """Each completed trial's evaluation: :meth:`before_record` (its value), then
    :meth:`after_record` (the evaluation beside the next trial, unless done already)."""

    def __init__(self, config: Config, renders: BackgroundRenders, study_name: str):
        self.config = config
        self.renders = renders
        self.study_name = study_name
        self._kept: dict[int, tuple[Path, Path]] = {}  # trial: (its checkpoint's link, run dir)

    @property
    def waited_for(self) -> bool:
        """Whether the trial's value or registration waits on its evaluation."""
        return self.config.optimization.listened or bool(self.config.registry.requirements)

    def _args(self, run_dir: Path) -> list[str]:
        evaluation = self.config.evaluation
        args = ["--held-out", str(self.renders.data), "--recognizer", evaluation.recognizer,
                "--sentences", str(evaluation.sentences),
                "--json", str(run_dir / "artifacts" / LISTENING_FILE)]
        return args + (["--vocoder", evaluation.vocoder] if evaluation.vocoder else [])

    def before_record(self, trial: optuna.Trial, value: float, attrs: dict[str, Any]) -> float:
        """The completed trial's value: ``value`` (its best objective), or, with a listened
        objective, its evaluation's (NaN when that failed, which fails the trial's value,
        not the study). Evaluates now when the value or registration waits on it (adding
        ``listening`` to ``attrs``), else keeps its checkpoint for :meth:`after_record`:
        retention may delete it as soon as the trial is recorded."""
        checkpoint = attrs.get("best_checkpoint")
        # A replayed run (trainer.replay) has no model to judge: its checkpoints hold the
        # epoch it replayed, not weights.
        if (not self.config.evaluation.enabled or self.config.trainer.replay is not None
                or not Path(checkpoint or "").is_file()):
            return math.nan if self.config.optimization.listened else value
        kept, run_dir = self.renders.keep(Path(checkpoint)), Path(checkpoint).parent
        if not self.waited_for:
            self._kept[trial.number] = (kept, run_dir)
            return value
        heard: list[Path] = []
        self.renders.launch(trial.number, kept, "train.evaluate", self._args(run_dir),
                            "judging it as a listener", lambda _, path: heard.append(path)
                            ).join()
        listening = read_listening(heard[0]) if heard else None
        if listening is not None:
            attrs[LISTENING_ATTR] = listening
            self.renders.hand_on(trial.number, heard[0])
        if self.config.registry.requirements:
            attrs[REQUIREMENTS_ATTR] = unmet(self.config.registry.parsed_requirements, listening)
        if not self.config.optimization.listened:
            return value
        listened = (listening or {}).get(self.config.optimization.objective_metric)
        return float(listened) if listened is not None else math.nan

    def after_record(self, trial_number: int) -> None:
        """Start the evaluation kept by :meth:`before_record`, beside the next trial."""
        if trial_number in self._kept:
            kept, run_dir = self._kept.pop(trial_number)
            self.renders.launch(trial_number, kept, "train.evaluate", self._args(run_dir),
                                "judging it as a listener", self._heard)

    def _heard(self, trial_number: int, path: Path) -> None:
        """A background evaluation's summary: onto the trial's record, then to the listeners."""
        listening = read_listening(path)
        if listening is None:
            return
        amend_user_attrs(open_storage(self.config), self.study_name, trial_number,
                         {LISTENING_ATTR: listening})
        self.renders.hand_on(trial_number, path)
