"""The MLflow tracking store of a config: its client, its experiment, where its artifacts
and figures are, and how to open its UI.

The store is ``mlflow.tracking_uri`` (SQLite in the state folder by default; a tracking
server URL works the same way), which also holds the model registry.

MLflow's UI (3.17) shows every experiment in the view the page's URL names, else in the
one last chosen in that browser (GenAI, with traces, at first): the experiment's tags do
not decide it. So the URLs printed here name the model-training view (runs, metrics,
logged models): :func:`experiment_url`.
"""

from __future__ import annotations

import functools
import shlex
import sys
import urllib.parse
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from tuner_core.config.sections import Config
from tuner_core.storage.file_lock import file_lock

STUDY_TAG = "smart_tuner.study"
ROLE_TAG = "smart_tuner.role"  # "study" (the parent run) or "trial"
# A trial's value: a metric of its run, and of its registered model.
BEST_OBJECTIVE = "best_objective"

# The URL parameter MLflow's UI (mlflow/server/js, 3.17: its WorkflowType) reads, on any
# page, to choose between its GenAI and its model-training ("machine_learning") view.
TRAINING_VIEW = "workflowType=machine_learning"

# Where each trainer artifact goes among the run's artifacts, by its file name's prefix
# (alignment_e0003.png, mel_e0003.png, sample_e0003.wav); any other prefix is its own folder.
ARTIFACT_DIRS = {"alignment": "alignment", "mel": "mel", "sample": "audio"}


def _is_server(uri: str) -> bool:
    return urllib.parse.urlparse(uri).scheme in ("http", "https")


def artifact_root(config: Config) -> Path | None:
    """Where a database-backed store keeps artifacts: ``<state_dir>/mlartifacts``.

    None for a tracking server, which stores (or proxies) artifacts itself.
    """
    return None if _is_server(config.tracking_uri) else config.state_dir / "mlartifacts"


def mlflow_client(config: Config) -> mlflow.MlflowClient:
    """A client of the configured tracking store (and of its model registry)."""
    uri = config.tracking_uri
    if uri.startswith("sqlite:///"):
        _prepare_sqlite_store(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


@functools.cache
def _prepare_sqlite_store(uri: str) -> None:
    """Create or upgrade the tables of a SQLite store, one process at a time.

    MLflow creates its tables on first use. Two workers starting together on a new
    database would both run the schema migrations, and one would fail ("table
    _alembic_tmp_tags already exists"); so the first use is made under a file lock.
    """
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(f"{path.name}.init.lock")):
        client = mlflow.MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # the tracking tables
        client.search_registered_models(max_results=1)  # the registry's


def ensure_experiment(client: mlflow.MlflowClient, config: Config) -> str:
    """The id of the configured experiment, created (or restored from deletion) if need be."""
    name = str(config.mlflow.experiment_name)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        root = artifact_root(config)
        try:
            return client.create_experiment(name, artifact_location=str(root) if root else None)
        except MlflowException:
            # Another worker may have created it in the meantime.
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def experiment_url(ui_url: str, experiment_id: str) -> str:
    """The page of an experiment in MLflow's UI at ``ui_url``, in its model-training view."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}?{TRAINING_VIEW}"


def mlflow_ui_command(config: Config) -> str:
    """The shell command that shows this config's runs in the MLflow UI.

    For a tracking server (an http/https URI) it is the server's URL: it serves the UI.
    """
    uri = config.tracking_uri
    if _is_server(uri):
        return uri
    return shlex.join([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                       "--default-artifact-root", str(artifact_root(config))])


def run_figures(config: Config, run_id: str) -> list[str]:
    """Where the latest alignment and mel plots of a trial's run are (paths for a local
    store, artifact URIs for a server); none when its trainer wrote none."""
    client = mlflow_client(config)
    root = client.get_run(run_id).info.artifact_uri
    figures = []
    for folder in (ARTIFACT_DIRS["alignment"], ARTIFACT_DIRS["mel"]):
        plots = [item.path for item in client.list_artifacts(run_id, folder)
                 if item.path.endswith(".png")]
        if plots:  # <kind>_eNNNN.png: the highest epoch sorts last
            figures.append(f"{root}/{max(plots)}")
    return figures


def artifact_folder(path: Path) -> str:
    """The folder of the run's artifacts that the trainer's file ``path`` goes to."""
    prefix = path.name.partition("_")[0]
    return ARTIFACT_DIRS.get(prefix, prefix)
