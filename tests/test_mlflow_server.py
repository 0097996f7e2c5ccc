"""Tracking and the model registry through a real MLflow tracking server, by URL.

The scaled-out setup: an ``mlflow server`` on loopback keeps runs and registered models in
PostgreSQL and serves their artifacts, the Optuna studies live in another PostgreSQL
database, and the tuner's config names nothing but the server's URL.
"""

import filecmp
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
import pytest

from tests.conftest import TEST_HPARAMS
from tests.deadlines import scaled
from tests.postgres import PostgresCluster
from tests.test_tuner import write_config
from tuner_core import SmartTuner
from tuner_core.tracking.registry import load_model_uri
from tuner_core.tracking.runs import TRACKED_METRICS

STARTUP_TIMEOUT_S = 120  # imports take most of it, and CI machines are slow


@dataclass
class MlflowServer:
    """A running ``mlflow server``: its URL and where it stores artifacts."""

    url: str
    artifacts_dir: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_healthy(server: subprocess.Popen, url: str, log: Path) -> None:
    """Return once ``url``/health answers; fail with the server's output if it never does."""
    startup_s = scaled(STARTUP_TIMEOUT_S)
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet
        time.sleep(0.2)
    why = (f"exited with status {server.returncode}" if server.poll() is not None
           else f"did not answer {url}/health within {startup_s:.0f} s")
    pytest.fail(f"mlflow server {why}; its output:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def mlflow_server(postgres: PostgresCluster,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """An ``mlflow server`` on a free loopback port, with a PostgreSQL backend store of its
    own (MLflow and Optuna would both keep an ``alembic_version`` table in a shared one)."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    port, log = _free_port(), folder / "server.log"
    artifacts_dir = folder / "artifacts"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1",
               "--backend-store-uri", postgres.create_database("mlflow_server_tracking"),
               "--artifacts-destination", str(artifacts_dir)]
    # The job runner is one more process importing MLflow, slowing the start; no job is run.
    environ = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environ)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_healthy(server, url, log)
        yield MlflowServer(url, artifacts_dir)
    finally:
        server.terminate()  # the mlflow CLI passes it on to its uvicorn process
        try:
            server.wait(timeout=scaled(30))
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@dataclass
class ServedStudy:
    """A finished study tracked through the server (see the ``served_study`` fixture)."""

    tuner: SmartTuner
    study: optuna.Study
    client: mlflow.MlflowClient


@pytest.fixture(scope="module")
def served_study(mlflow_server: MlflowServer, postgres: PostgresCluster, corpus: Path,
                 mel_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> ServedStudy:
    """A real 2-trial study of 2 epochs, its storage in PostgreSQL, tracked by the server."""
    path = write_config(
        tmp_path_factory.mktemp("served"), corpus, mel_cache,
        storage=postgres.create_database("mlflow_server_optuna"),
        trainer={"hparams": {**TEST_HPARAMS, "epochs": 2}},
        mlflow={"enabled": True, "tracking_uri": mlflow_server.url})
    tuner = SmartTuner(path)
    tuner.run_optimization(n_trials=2, study_name="served")
    return ServedStudy(tuner, tuner.study("served"),
                       mlflow.MlflowClient(tracking_uri=mlflow_server.url))


def test_each_trial_is_a_run_with_its_params_and_metrics_on_the_server(served_study):
    study, client = served_study.study, served_study.client
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["smart_tuner.study"] == "served"
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["learning_rate"] == str(trial.params["learning_rate"])
        for metric in TRACKED_METRICS:
            history = client.get_metric_history(run.info.run_id, metric)
            assert [point.step for point in history] == [1, 2], metric
        val_loss = [p.value for p in client.get_metric_history(run.info.run_id, "val_loss")]
        assert val_loss[-1] == pytest.approx(trial.user_attrs["last_metrics"]["val_loss"])


def test_artifacts_go_to_the_server_and_come_back_from_it(served_study, mlflow_server,
                                                          tmp_path):
    study, client = served_study.study, served_study.client
    best = study.best_trial
    run_id = best.user_attrs["mlflow_run_id"]
    # The server chose the experiment's artifact location: its proxy, not a local folder.
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    # The registered versions are logged models, stored by the server in its own folder
    # (the tuner kept no store of its own): the best trial's checkpoint is among them.
    stored = [path for path in mlflow_server.artifacts_dir.rglob("best.pt")
              if filecmp.cmp(path, Path(best.user_attrs["run_dir"]) / "best.pt", shallow=False)]
    assert len(stored) == 1
    assert json.loads((stored[0].parent / "hparams.json").read_text())["epochs"] == 2
    state_dir = served_study.tuner.config.state_dir
    assert not (state_dir / "mlartifacts").exists() and not (state_dir / "mlflow.db").exists()


def test_the_best_model_is_registered_promoted_and_loaded_through_the_server(
        served_study, mlflow_server, tmp_path):
    tuner, study = served_study.tuner, served_study.study
    versions = tuner.models()
    newest = versions[0]
    assert newest["trial"] == study.best_trial.number and newest["study"] == "served"
    assert newest["value"] == study.best_value
    assert tuner.best_version("served") == newest["version"]

    promoted = tuner.promote(newest["version"])
    assert promoted["aliases"] == ["champion"] and promoted["replaced"] is None
    model_name = tuner.config.registry.model_name
    checkpoint = load_model_uri(f"models:/{model_name}@champion", mlflow_server.url, tmp_path)
    assert filecmp.cmp(checkpoint, Path(study.best_trial.user_attrs["run_dir"]) / "best.pt",
                       shallow=False)


def test_the_server_url_may_come_from_mlflow_tracking_uri(served_study, mlflow_server,
                                                          corpus, mel_cache, tmp_path):
    # The same config without a tracking_uri, as a deployment would write it.
    path = write_config(tmp_path, corpus, mel_cache, storage=served_study.tuner.config.storage,
                        mlflow={"enabled": True})
    tuner = SmartTuner(path, environ={"MLFLOW_TRACKING_URI": mlflow_server.url})
    assert tuner.config.tracking_uri == mlflow_server.url
    assert tuner.models() == served_study.tuner.models()
