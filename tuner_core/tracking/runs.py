"""MLflow tracking of studies: one parent run per study, one child run per trial.

    listener = MlflowTracker(config)   # run_worker adds it when mlflow.enabled is true

Runs go to the experiment ``mlflow.experiment_name`` at ``mlflow.tracking_uri`` (SQLite
in the state folder by default; a tracking server URL works the same way):

- the study's parent run (tags ``smart_tuner.study=<name>``, ``smart_tuner.role=study``)
  holds the study's objective, search space and fixed hyperparameters as params and, kept
  up to date as trials end (step: the trials ended so far), the metrics ``best_value`` and
  ``trials_complete``, ``trials_pruned``, ``trials_fail``, and the tags ``best.trial`` and
  ``best.<param>`` (tags, as a param cannot change); so studies sort and compare in the
  UI. It ends FINISHED with the study, or KILLED when the study was stopped on request;
- each trial's child run ``trial-NNNN`` holds the trial's hyperparameters as params, one
  point per validation of each of :data:`TRACKED_METRICS` (step = epoch), the trainer's
  plots and audio samples as they are written, the adaptations (``adaptations.json``)
  and, at the end, the outcome, criterion, reason and Optuna state as tags; a failed
  trial adds its log tail (``trainer_log_tail.txt``). Its status mirrors the outcome. A
  confirmation trial's run is tagged ``smart_tuner.confirms=<the trial it trains again>``.
  A trial whose worker died (killed, its machine lost) cannot end its own run: another
  worker's tracker closes it FAILED, with the reason, when it starts a trial or ends the
  study, whether the trial was retried or its retries were used up.
  Whatever the run folder's ``artifacts/`` holds when the trial ends and was not logged
  yet goes to the run then, whatever the outcome: a pruned or stopped trainer may write
  its plots after the tuner stopped listening to it.
  A completed trial's listening evaluation (:mod:`tuner_core.trial.evaluation`) adds
  ``listening.json`` and its numbers as metrics ``listen_<name>`` (``listen_cer_ratio``,
  ``listen_mcd``, ...; step 0, at the evaluation's time), whenever it ends.

Every run records the code's version and the dataset it trained on
(:mod:`tuner_core.tracking.provenance`).

The run ids are kept in the Optuna storage, for the bot and the registry:
``mlflow_run_id`` on each trial and ``mlflow_parent_run_id`` on the study.

Tracking is an observer: when MLflow fails (database locked, server down), a warning is
logged and the trial goes on untracked.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import (
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)
from optuna.study import StudyDirection
from optuna.trial import TrialState

from tuner_core.config.sections import Config
from tuner_core.rules.requirements import LISTENING_METRICS
from tuner_core.storage.attributes import (
    BUDGET_ATTR,
    CONFIG_ATTR,
    CONFIRMS_ATTR,
    END_REASON_ATTR,
    PARENT_RUN_ATTR,
    TRIAL_RUN_ATTR,
    Outcome,
    worker_lost,
)
from tuner_core.storage.retries import lost_predecessor
from tuner_core.tracking.provenance import code_tags, dataset_input
from tuner_core.tracking.store import (
    BEST_OBJECTIVE,
    ROLE_TAG,
    STUDY_TAG,
    artifact_folder,
    ensure_experiment,
    mlflow_client,
)
from tuner_core.trial.evaluation import LISTENING_FILE, read_listening
from tuner_core.trial.listener import TrialListener

log = logging.getLogger(__name__)

# Held while a tracker finds or makes a study's parent run: one per study, not one per device.
_PARENT_RUN_LOCK = threading.Lock()

# The fields of a validation event logged as metrics, plus the objective computed from them.
TRACKED_METRICS = ("train_loss", "val_loss", "val_mel_loss", "val_gate_loss", "grad_norm", "lr",
                   "val_guided_attention_loss", "alignment_score", "attention_focus",
                   "attention_progress", "attention_coverage", "stop_rate", "length_ratio",
                   "objective")

LISTENING_PREFIX = "listen_"  # of the listening evaluation's metrics

# The trial states counted on the study's parent run (trials_complete, ...): the ended ones.
SUMMARISED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

# A trial run's final status, by the trial's outcome.
RUN_STATUS = {Outcome.COMPLETED: "FINISHED", Outcome.EARLY_STOPPED: "FINISHED",
              Outcome.PRUNED: "KILLED", Outcome.STOPPED_BY_USER: "KILLED",
              Outcome.FAILED: "FAILED"}


# --- Logging helpers -------------------------------------------------------------------

def metric_points(values: Mapping[str, Any], step: int, time_s: float,
                  model_id: str | None = None) -> list[Metric]:
    """The finite :data:`TRACKED_METRICS` of a validation's ``values``, as MLflow metrics at
    ``step`` (its epoch) logged at ``time_s`` (the validation's Unix time); linked to the
    logged model ``model_id`` when given.

    The same validation gives the same points: logged again with a model id, they link the
    run's existing points to the model (MLflow keeps one copy of an identical point).
    """
    timestamp = int(time_s * 1000)
    return [Metric(key, float(values[key]), timestamp, step, model_id=model_id)
            for key in TRACKED_METRICS
            if values.get(key) is not None and math.isfinite(values[key])]


def listening_points(listening: Mapping[str, Any], model_id: str | None = None
                     ) -> list[Metric]:
    """The numbers of a listening evaluation's summary as metrics ``listen_<name>`` (at
    step 0 and the evaluation's time, so that logging them again links the same points to
    the logged model ``model_id``)."""
    timestamp = int(listening.get("time", time.time()) * 1000)
    return [Metric(LISTENING_PREFIX + key, float(listening[key]), timestamp, 0,
                   model_id=model_id)
            for key in LISTENING_METRICS
            if isinstance(listening.get(key), int | float) and math.isfinite(listening[key])]


def _text(value: Any, limit: int) -> str:
    """``value`` as MLflow stores it (text), cut to ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def log_params(client: mlflow.MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log ``params`` within MLflow's limits on value length and batch size."""
    entries = [Param(key, _text(value, MAX_PARAM_VAL_LENGTH)) for key, value in params.items()]
    for start in range(0, len(entries), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=entries[start:start + MAX_PARAMS_TAGS_PER_BATCH])


def _tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {key: _text(value, MAX_TAG_VAL_LENGTH) for key, value in tags.items()}


def _study_params(study_config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``config`` user attribute of a study (see tuner_core.storage.attributes), flattened."""
    params: dict[str, Any] = {key: study_config[key]
                              for key in ("objective_metric", "direction") if key in study_config}
    for name, space in study_config.get("search_space", {}).items():
        params[f"search.{name}"] = space
    for name, value in study_config.get("fixed_hparams", {}).items():
        params[f"fixed.{name}"] = value
    return params


def _never_raises(hook: Callable[..., None]) -> Callable[..., None]:
    """A listener hook whose failures are logged as warnings instead of failing the trial."""
    @functools.wraps(hook)
    def guarded(self: MlflowTracker, *args: Any) -> None:
        try:
            hook(self, *args)
        except Exception as error:
            log.warning("MLflow tracking failed in %s, going on without it: %s: %s",
                        hook.__name__, type(error).__name__, error)
    return guarded


# --- The listener ----------------------------------------------------------------------

@dataclass
class _TrackedTrial:
    """A running trial's MLflow run, its run folder and the artifacts logged so far."""

    run_id: str
    run_dir: Path
    logged: set[Path] = field(default_factory=set)

    def log_artifact(self, client: mlflow.MlflowClient, path: Path) -> None:
        client.log_artifact(self.run_id, str(path), artifact_folder(path))
        self.logged.add(path)


class MlflowTracker(TrialListener):
    """Mirrors a worker's trials into MLflow as they run (see the module docstring)."""

    def __init__(self, config: Config):
        self.config = config
        self._parent_run_ids: dict[str, str] = {}  # by study name
        self._trials: dict[int, _TrackedTrial] = {}  # by trial number, while it runs
        self._ended: dict[int, _TrackedTrial] = {}  # and after, for plots drawn afterwards
        self._settled: set[tuple[str, int]] = set()  # (study, trial): failed, run closed

    # Opened on first use, inside a guarded hook, so that an unreachable store fails no trial.
    @functools.cached_property
    def client(self) -> mlflow.MlflowClient:
        return mlflow_client(self.config)

    @functools.cached_property
    def experiment_id(self) -> str:
        return ensure_experiment(self.client, self.config)

    @_never_raises
    def trial_started(self, trial: optuna.Trial, hparams: dict[str, Any], run_dir: Path) -> None:
        study = trial.study
        self._close_lost_runs(study)
        confirms = trial.user_attrs.get(CONFIRMS_ATTR)  # a champion trained again
        run = self.client.create_run(
            self.experiment_id, run_name=f"trial-{trial.number:04d}",
            tags={MLFLOW_PARENT_RUN_ID: self._parent_run_id(study), STUDY_TAG: study.study_name,
                  ROLE_TAG: "trial", "smart_tuner.trial": str(trial.number),
                  "smart_tuner.run_dir": str(run_dir), **code_tags(),
                  **({"smart_tuner.confirms": str(confirms)} if confirms is not None else {})})
        run_id = run.info.run_id
        self._trials[trial.number] = _TrackedTrial(run_id, run_dir)
        trial.set_user_attr(TRIAL_RUN_ATTR, run_id)
        log_params(self.client, run_id, hparams)
        self._log_dataset(run_id)

    @_never_raises
    def trainer_event(self, trial: optuna.Trial, event: dict[str, Any],
                      objective: float | None) -> None:
        tracked = self._trials.get(trial.number)
        if tracked is None:  # its start could not be tracked
            return
        run_id = tracked.run_id
        if event["event"] == "validation":
            self.client.log_batch(run_id, metrics=metric_points(
                event | {"objective": objective}, event["epoch"], event["time"]))
        elif event["event"] == "artifact":
            tracked.log_artifact(self.client, Path(event["path"]))

    @_never_raises
    def trial_adapted(self, trial: optuna.Trial, adaptation: dict[str, Any]) -> None:
        tracked = self._trials.get(trial.number)
        if tracked is None:
            return
        run_id = tracked.run_id
        # Params cannot change in MLflow; the corrected values go in a file and a tag.
        adaptations = trial.user_attrs.get("adaptations", [adaptation])
        self.client.log_dict(run_id, adaptations, "adaptations.json")
        self.client.set_tag(run_id, "smart_tuner.adaptations", str(len(adaptations)))

    @_never_raises
    def trial_finished(self, trial: optuna.Trial, state: TrialState, value: float | None,
                       attrs: dict[str, Any]) -> None:
        tracked = self._trials.pop(trial.number, None)
        if tracked is None:
            return
        self._ended[trial.number] = tracked
        run_id = tracked.run_id
        self._log_outcome(run_id, state, attrs)
        if value is not None:
            self.client.log_metric(run_id, BEST_OBJECTIVE, value)
        if attrs.get("log_tail"):
            self.client.log_text(run_id, attrs["log_tail"], "trainer_log_tail.txt")
        # The trainer has exited: what it wrote after its last event is on disk now.
        for path in sorted((tracked.run_dir / "artifacts").glob("*")):
            if path.is_file() and path not in tracked.logged:
                tracked.log_artifact(self.client, path)
        self.client.set_terminated(run_id, RUN_STATUS[attrs["outcome"]])
        # Optuna records the trial's state after this hook: the summary is told it.
        self._log_study_summary(trial.study, {trial.number: (state, value)})

    @_never_raises
    def artifact_rendered(self, trial_number: int, path: Path) -> None:
        tracked = self._trials.get(trial_number) or self._ended.get(trial_number)
        if tracked is not None and path not in tracked.logged:
            tracked.log_artifact(self.client, path)
            if path.name == LISTENING_FILE and (listening := read_listening(path)):
                self.client.log_batch(tracked.run_id, metrics=listening_points(listening))

    @_never_raises
    def study_finished(self, study: optuna.Study) -> None:
        self._close_lost_runs(study)
        run_id = self._parent_run_ids.get(study.study_name) or self._find_parent_run(study)
        if run_id is None:  # no trial of this study was ever tracked
            return
        self._log_study_summary(study)
        # end_reason is set by the study's last worker just before study_finished is called.
        stopped = study.user_attrs.get(END_REASON_ATTR) == "stopped on request"
        self.client.set_terminated(run_id, "KILLED" if stopped else "FINISHED")

    def _log_dataset(self, run_id: str) -> None:
        dataset = dataset_input(self.config.dataset_path)
        if dataset is not None:
            self.client.log_inputs(run_id, [dataset])

    def _log_study_summary(self, study: optuna.Study,
                           ending: Mapping[int, tuple[TrialState, float | None]] | None = None
                           ) -> None:
        """Log on the study's parent run its best value, its trials by state and (as tags,
        which may change) the best trial and its parameters; ``ending``: the state and
        value of trials that end now, before Optuna records them.

        Metrics are at step "trials ended so far", so the UI charts the study's progress.
        """
        run_id = self._parent_run_ids.get(study.study_name) or self._find_parent_run(study)
        if run_id is None:
            return
        trials = {trial.number: (trial.state, trial.value, trial.params)
                  for trial in study.get_trials(deepcopy=False)}
        for number, (state, value) in (ending or {}).items():
            trials[number] = (state, value, trials[number][2])
        counts = {state: sum(ended is state for ended, _, _ in trials.values())
                  for state in SUMMARISED}
        step, now = sum(counts.values()), int(time.time() * 1000)
        metrics = [Metric(f"trials_{state.name.lower()}", count, now, step)
                   for state, count in counts.items()]
        completed = [(value, number, params) for number, (state, value, params) in trials.items()
                     if state is TrialState.COMPLETE and value is not None
                     and math.isfinite(value)]
        tags = {}
        if completed:
            better = min if study.direction is StudyDirection.MINIMIZE else max
            value, number, params = better(completed, key=lambda trial: trial[0])
            metrics.append(Metric("best_value", value, now, step))
            tags = _tags({"best.trial": number,
                          **{f"best.{key}": item for key, item in params.items()}})
        self.client.log_batch(run_id, metrics=metrics,
                              tags=[RunTag(key, tag) for key, tag in tags.items()])

    def _log_outcome(self, run_id: str, state: TrialState, attrs: dict[str, Any]) -> None:
        tags = _tags({"smart_tuner.outcome": attrs["outcome"],
                      "smart_tuner.criterion": attrs.get("criterion") or "",
                      "smart_tuner.reason": attrs.get("reason") or "",
                      "smart_tuner.state": state.name})
        self.client.log_batch(run_id, tags=[RunTag(key, tag) for key, tag in tags.items()])

    def _close_lost_runs(self, study: optuna.Study) -> None:
        """End FAILED, with the reason, the runs still RUNNING of the study's failed trials.

        Such a trial lost its worker, whether it is retried or not (any other end closes
        its run before Optuna records it, unless tracking failed then); the worker that
        failed it has recorded why (:func:`~tuner_core.storage.attributes.worker_lost`),
        or is about to.
        """
        trials = study.get_trials(deepcopy=False)
        for trial in trials:
            key = (study.study_name, trial.number)
            run_id = trial.user_attrs.get(TRIAL_RUN_ATTR)
            if trial.state is not TrialState.FAIL or run_id is None or key in self._settled:
                continue
            attrs = trial.user_attrs
            if "outcome" not in attrs:  # not recorded yet: as it will be
                retry = next((t.number for t in trials
                              if lost_predecessor(t) == trial.number), None)
                attrs = worker_lost(retry)
            try:
                if self.client.get_run(run_id).info.status == "RUNNING":
                    self._log_outcome(run_id, TrialState.FAIL, attrs)
                    self.client.set_terminated(run_id, RUN_STATUS[attrs["outcome"]])
            except Exception as error:  # tried again next time; the trial at hand goes on
                log.warning("cannot close the run of failed trial %d: %s: %s", trial.number,
                            type(error).__name__, error)
                continue
            self._settled.add(key)

    # --- the study's parent run --------------------------------------------------------
    def _parent_run_id(self, study: optuna.Study) -> str:
        """The study's parent run, found (several workers share a study) or created."""
        name = study.study_name
        if name not in self._parent_run_ids:
            with _PARENT_RUN_LOCK:  # the trackers of a worker's devices start together
                run_id = self._find_parent_run(study)
                if run_id is None:
                    run_id = self._create_parent_run(study)
                elif self.client.get_run(run_id).info.status != "RUNNING":
                    self.client.update_run(run_id, status="RUNNING")  # a resumed study
            study.set_user_attr(PARENT_RUN_ATTR, run_id)
            self._parent_run_ids[name] = run_id
        return self._parent_run_ids[name]

    def _find_parent_run(self, study: optuna.Study) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{STUDY_TAG}` = '{study.study_name}' and tags.`{ROLE_TAG}` = 'study'",
            order_by=["attributes.start_time ASC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def _create_parent_run(self, study: optuna.Study) -> str:
        run = self.client.create_run(
            self.experiment_id, run_name=study.study_name,
            tags=_tags({STUDY_TAG: study.study_name, ROLE_TAG: "study",
                        "smart_tuner.n_trials": study.user_attrs.get(BUDGET_ATTR),
                        **code_tags()}))
        # Workers on other machines may have made one at the same time: all keep the oldest.
        oldest = self._find_parent_run(study)
        if oldest != run.info.run_id:
            self.client.delete_run(run.info.run_id)
            return oldest
        self._log_dataset(run.info.run_id)
        opt = self.config.optimization
        log_params(self.client, run.info.run_id, {
            **_study_params(study.user_attrs.get(CONFIG_ATTR, {})),
            "overfitting_penalty": opt.overfitting_penalty,
            "sampler": opt.sampler.type, "pruner": opt.pruner.type})
        return run.info.run_id
