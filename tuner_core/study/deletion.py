"""Deleting a study with what it left behind: its Optuna study, its MLflow runs (the
study's parent run and its trials' runs) and its checkpoints folder.

    footprint = study_footprint(config, "tts-march")   # what would go; nothing changes yet
    delete_study(config, footprint)

Registered model versions stay: promotion and rollback are a person's decision, and a
version's files are a copy in MLflow's artifact store, not the study's checkpoints.
MLflow deletes runs softly (the UI can restore them); ``mlflow gc`` removes them for good.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tuner_core import tracking
from tuner_core.config.sections import Config
from tuner_core.errors import StudyBusy
from tuner_core.storage.opening import open_storage
from tuner_core.storage.retries import fail_stale_trials
from tuner_core.study.life import load_study


@dataclass(frozen=True)
class StudyFootprint:
    """What deleting a study removes."""

    study_name: str
    n_trials: int
    mlflow_run_ids: list[str]  # empty when MLflow tracking is off
    checkpoint_dir: Path | None  # None when the study left no folder


def study_footprint(config: Config, name: str) -> StudyFootprint:
    """Find what study ``name`` left; :class:`StudyBusy` while a trial of it runs.

    A trial whose worker died counts as running only until its heartbeat is stale.
    """
    study = load_study(config, name)  # StudyNotFound names the studies there are
    fail_stale_trials(study)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if running:
        raise StudyBusy(f"study {name} has {len(running)} running trial(s); stop it first "
                        f"(stop --study {name}) and wait for its workers to leave")
    folder = config.checkpoint_dir / name
    # The name comes from the storage: never follow it out of checkpoint_dir.
    inside = Path(config.checkpoint_dir).resolve() in folder.resolve().parents
    return StudyFootprint(
        study_name=name, n_trials=len(study.get_trials(deepcopy=False)),
        mlflow_run_ids=_mlflow_runs(config, name) if config.mlflow.enabled else [],
        checkpoint_dir=folder if inside and folder.is_dir() else None)


def delete_study(config: Config, footprint: StudyFootprint) -> None:
    """Delete what ``footprint`` lists; the Optuna study last, so that after a failure
    the study is still listed and ``delete`` can be run again."""
    if footprint.mlflow_run_ids:
        client = tracking.mlflow_client(config)
        for run_id in footprint.mlflow_run_ids:
            client.delete_run(run_id)
    if footprint.checkpoint_dir is not None:
        shutil.rmtree(footprint.checkpoint_dir)
    optuna.delete_study(study_name=footprint.study_name, storage=open_storage(config))


def _mlflow_runs(config: Config, name: str) -> list[str]:
    """The ids of the study's runs in the configured experiment."""
    client = tracking.mlflow_client(config)
    experiment = client.get_experiment_by_name(str(config.mlflow.experiment_name))
    if experiment is None:
        return []
    run_ids: list[str] = []
    page_token = None
    while True:
        page = client.search_runs([experiment.experiment_id],
                                  f"tags.`{tracking.STUDY_TAG}` = '{name}'", page_token=page_token)
        run_ids += [run.info.run_id for run in page]
        page_token = page.token
        if not page_token:
            return run_ids
