"""Registering the best trials of a study as versions of one MLflow model.

While a study runs, :class:`RegistryListener` registers each trial that beats the study's
best so far: its best checkpoint is logged as an MLflow model of the PyTorch flavour (a
"logged model" of the trial's run, which MLflow's UI lists under "Logged models"), and a
new version of ``registry.model_name`` points at it::

    mlflow.pytorch.load_model("models:/NAME@champion")   # the Tacotron2 module, to use

The model's folder also holds the checkpoint (``best.pt``: weights, optimiser, hparams; what
``python -m train.synthesize`` and exports use) and ``hparams.json``, and the code of the
``train`` package, so it loads with torch alone. The logged model holds the searched
parameters as its params and, linked to it as MLflow 3 links a model's metrics (the run's
points of the checkpoint's validation, step = epoch), the metrics of that validation and
``best_objective`` (the trial's value). A version's tags say only where it comes from:
``study``, ``trial``, ``objective_metric`` and the digest below. The trial records the
version number (user attr ``registered_version``). A checkpoint trained with the same
hyperparameters on the same data as a registered one (a study re-run with the same seed) is
not registered again: the trial records that version instead.

A trial's listening evaluation (:mod:`tuner_core.trial.evaluation`) is linked to its
version's logged model too, as metrics ``listen_<name>``: at registration when the trial
waited for it, else when it arrives. With ``registry.requirements`` set, every trial waits
for it, and one that fails a requirement is not registered, however good its value (the
warning, and the chat's notice of the new best, name the requirement).

Versions are never promoted automatically: the champion is a person's decision
(:mod:`tuner_core.tracking.registry`), and ``promote`` refuses a version that fails the
requirements.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS
from optuna.trial import TrialState

import train
from tuner_core.config.sections import Config
from tuner_core.errors import RegistryError
from tuner_core.lazy import LazyModule
from tuner_core.rules.requirements import unmet
from tuner_core.storage.attributes import (
    LISTENING_ATTR,
    TRIAL_RUN_ATTR,
    VALIDATION_METRICS,
    VERSION_ATTR,
)
from tuner_core.storage.confirmations import confirmation_groups
from tuner_core.tracking.registry import (
    CHECKPOINT_FILE,
    CONFIRMED_TAG,
    DIGEST_TAG,
    HPARAMS_FILE,
    format_number,
    version_model,
)
from tuner_core.tracking.runs import listening_points, metric_points
from tuner_core.tracking.store import BEST_OBJECTIVE, STUDY_TAG, mlflow_client
from tuner_core.trial.evaluation import LISTENING_FILE, read_listening
from tuner_core.trial.listener import TrialListener, is_new_best

# torch, loaded only when a model is registered.
mlflow_pytorch = LazyModule("mlflow.pytorch")
synthesize = LazyModule("train.synthesize")
torch = LazyModule("torch")

log = logging.getLogger(__name__)


@dataclass
class BestCheckpoint:
    """A trial's best checkpoint, with the hyperparameters and validation that made it."""

    path: Path
    hparams: dict[str, Any]
    metrics: dict[str, Any]  # of its validation, with "epoch"
    validated_at: float | None = None  # the validation's Unix time, as the run logged it


def register_version(config: Config, trial: optuna.Trial, value: float,
                     best: BestCheckpoint, listening: Mapping[str, Any] | None = None) -> str:
    """Log ``best`` as an MLflow model and register it as a new version; its version
    number. A version of the same hyperparameters and data is reused, not duplicated.
    ``listening``: the trial's listening evaluation, linked to the model too."""
    run_id = trial.user_attrs.get(TRIAL_RUN_ATTR)
    if run_id is None:
        raise RegistryError(f"trial {trial.number} has no MLflow run to register from")
    client, name = mlflow_client(config), str(config.registry.model_name)
    digest = _digest(config, best.hparams)
    same = client.search_model_versions(f"name = '{name}' and tags.{DIGEST_TAG} = '{digest}'")
    if same:
        version = str(min(int(v.version) for v in same))
        log.info("trial %d is the best of study %s so far, with the hyperparameters and data "
                 "of version %s: not registered again", trial.number, trial.study.study_name,
                 version)
    else:
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(
                name, description=f"Tacotron2 checkpoints of {config.experiment_name} studies")
        model = _log_model(client, name, trial, run_id, best)
        _link_metrics(client, run_id, model.model_id, value, best)
        if listening is not None:
            client.log_batch(run_id, metrics=listening_points(listening, model.model_id))
        tags = {"study": trial.study.study_name, "trial": str(trial.number),
                "objective_metric": config.optimization.objective_metric, DIGEST_TAG: digest}
        # The artifact location, not models:/<model_id>: MLflow's SQL registry resolves a
        # models:/ source through the process-wide tracking URI, not this client's.
        version = str(client.create_model_version(
            name, source=model.artifact_location, run_id=run_id, model_id=model.model_id,
            tags=tags, description=f"trial {trial.number} of study {trial.study.study_name}"
        ).version)
        # What MLflow's own registration records, so the UI links the model to its version.
        client.set_logged_model_tags(model.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(
            [{"name": name, "version": version}])})
        log.info("trial %d is the best of study %s so far: registered as version %s",
                 trial.number, trial.study.study_name, version)
    trial.set_user_attr(VERSION_ATTR, version)
    return version


def _digest(config: Config, hparams: dict[str, Any]) -> str:
    """What makes two checkpoints the same model: all hyperparameters (the seed among
    them) and the dataset."""
    identity = json.dumps({"hparams": hparams, "dataset": str(config.dataset_path)},
                          sort_keys=True, default=str)
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _link_metrics(client: mlflow.MlflowClient, run_id: str, model_id: str, value: float,
                  best: BestCheckpoint) -> None:
    """Link to the logged model the run's metrics of the checkpoint's validation and its
    ``best_objective``: the same points again, with the model's id (MLflow stores a point
    once in the run, and links it to the model)."""
    epoch = best.metrics.get("epoch") or 0
    points = metric_points(best.metrics, epoch, best.validated_at or time.time(), model_id)
    # The run's best_objective, logged as the trial ended, or the value itself.
    ended = client.get_metric_history(run_id, BEST_OBJECTIVE) or [
        Metric(BEST_OBJECTIVE, value, int(time.time() * 1000), 0)]
    points += [Metric(point.key, point.value, point.timestamp, point.step, model_id=model_id)
               for point in ended[-1:]]
    client.log_batch(run_id, metrics=points)


def _log_model(client: mlflow.MlflowClient, name: str, trial: optuna.Trial, run_id: str,
               best: BestCheckpoint):
    """``best`` as a logged model of the trial's run (PyTorch flavour); the LoggedModel.

    This is what ``mlflow.pytorch.log_model`` does, through ``client``: log_model takes
    the store and the experiment from process-wide settings, and a worker may serve a
    store other than the process's default.
    """
    module, _ = synthesize.load_model(best.path)
    model = client.create_logged_model(
        client.get_run(run_id).info.experiment_id, name=name, source_run_id=run_id,
        params={key: str(item) for key, item in trial.params.items()},
        tags={STUDY_TAG: trial.study.study_name, "smart_tuner.trial": str(trial.number)},
        model_type="Tacotron2")
    with tempfile.TemporaryDirectory(prefix="smart_tuner_model_") as tmp:
        folder = Path(tmp, "model")
        mlflow_pytorch.save_model(
            module, str(folder), code_paths=[str(Path(train.__file__).parent)],
            # torch.export cannot trace the autoregressive decoder; and naming torch here
            # (without a local label such as +cpu) spares inferring it in a subprocess.
            serialization_format="pickle",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            mlflow_model=mlflow.models.Model(
                artifact_path=model.artifact_location, run_id=run_id,
                model_uuid=model.model_id, model_id=model.model_id))
        for cache in list(folder.rglob("__pycache__")):
            shutil.rmtree(cache)
        shutil.copyfile(best.path, folder / CHECKPOINT_FILE)
        (folder / HPARAMS_FILE).write_text(json.dumps(best.hparams, indent=2))
        client.log_model_artifacts(model.model_id, str(folder))
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id,
                                                  step=best.metrics.get("epoch") or 0)])
    return client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)


@dataclass
class _RunningTrial:
    """What the registry follows of the trial running now."""

    hparams: dict[str, Any] = field(default_factory=dict)     # of its current trainer
    validation: dict[str, Any] = field(default_factory=dict)  # the latest one's metrics
    validated_at: float | None = None  # and its time
    best: BestCheckpoint | None = None


class RegistryListener(TrialListener):
    """Registers each new best trial (when MLflow is enabled).

    It may not fail a trial: problems are logged as warnings.
    """

    def __init__(self, config: Config):
        self.config = config
        self._running = _RunningTrial()
        self._registered: dict[int, str] = {}  # trial number: its version, this worker's

    def trial_started(self, trial: optuna.Trial, hparams: dict[str, Any], run_dir: Path) -> None:
        self._running = _RunningTrial(hparams=hparams)

    def trainer_event(self, trial: optuna.Trial, event: dict[str, Any],
                      objective: float | None) -> None:
        running = self._running
        if event["event"] == "start":  # a restart after an adaptation changes them
            running.hparams = event["hparams"]
        elif event["event"] == "validation":
            running.validation = {key: event.get(key) for key in VALIDATION_METRICS} | {
                "objective": objective}
            running.validated_at = event["time"]
        elif event["event"] == "checkpoint" and event["kind"] == "best":
            running.best = BestCheckpoint(Path(event["path"]), running.hparams,
                                          running.validation, running.validated_at)

    def trial_finished(self, trial: optuna.Trial, state: TrialState, value: float | None,
                       attrs: dict[str, Any]) -> None:
        best = self._running.best
        # A NaN value: a listened objective whose evaluation failed (Optuna fails the trial).
        if not (self.config.mlflow.enabled and state is TrialState.COMPLETE and value is not None
                and math.isfinite(value) and best is not None
                and self._beats_the_registrable(trial.study, value)):
            return
        listening = attrs.get(LISTENING_ATTR)
        if failed := unmet(self.config.registry.parsed_requirements, listening):
            log.warning("trial %d is the best of study %s so far, but not registered: it "
                        "fails %s", trial.number, trial.study.study_name, "; ".join(failed))
            return
        try:
            self._registered[trial.number] = register_version(self.config, trial, value, best,
                                                              listening)
        except Exception as error:
            log.warning("trial %d could not be registered: %s: %s", trial.number,
                        type(error).__name__, error)

    def _beats_the_registrable(self, study: optuna.Study, value: float) -> bool:
        """Whether ``value`` beats every completed trial that meets the requirements (all of
        them, without requirements): one that fails them does not hold the place."""
        requirements = self.config.registry.parsed_requirements
        if not requirements:
            return is_new_best(study, value)
        values = [trial.value for trial in study.get_trials(
                      deepcopy=False, states=(TrialState.COMPLETE,))
                  if trial.value is not None
                  and not unmet(requirements, trial.user_attrs.get(LISTENING_ATTR))]
        minimize = study.direction.name == "MINIMIZE"
        return all(value < other if minimize else value > other for other in values)

    def artifact_rendered(self, trial_number: int, path: Path) -> None:
        """A registered trial's listening evaluation, done after it: linked to its model."""
        version = self._registered.get(trial_number)
        if version is None or path.name != LISTENING_FILE:
            return
        try:
            client, name = mlflow_client(self.config), str(self.config.registry.model_name)
            model = version_model(client, name, version)
            if model is not None and (listening := read_listening(path)) is not None:
                client.log_batch(model.source_run_id,
                                 metrics=listening_points(listening, model.model_id))
        except Exception as error:
            log.warning("the listening evaluation of trial %d could not be linked to version "
                        "%s: %s: %s", trial_number, version, type(error).__name__, error)

    def study_finished(self, study: optuna.Study) -> None:
        """Tag the versions of confirmed configurations with their mean over seeds."""
        if not self.config.mlflow.enabled:
            return
        trials = study.get_trials(deepcopy=False)
        try:
            client, name = mlflow_client(self.config), str(self.config.registry.model_name)
            for group in confirmation_groups(trials):
                for number in group.trials:
                    version = trials[number].user_attrs.get(VERSION_ATTR)
                    if version is None:
                        continue
                    for key, value in (("mean", group.mean), ("std", group.std),
                                       ("seeds", group.seeds)):
                        client.set_model_version_tag(name, version, CONFIRMED_TAG + key,
                                                     format_number(value))
        except Exception as error:
            log.warning("the confirmation of study %s could not be recorded in the registry: "
                        "%s: %s", study.study_name, type(error).__name__, error)
