"""MLflow tracking of a real tiny study: parent and child runs, metrics, tags, artifacts."""

import hashlib
import logging
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.conftest import TEST_HPARAMS, TrackedStudy
from tests.deadlines import scaled
from tests.test_replay import replay_config
from tests.test_tuner import ROOT, write_config
from tuner_core.config import Config, load_config
from tuner_core.reporting.next_steps import closing_note
from tuner_core.study import create_study, run_worker
from tuner_core.tracking import provenance
from tuner_core.tracking.runs import TRACKED_METRICS, MlflowTracker
from tuner_core.tracking.store import (
    ensure_experiment,
    experiment_url,
    mlflow_client,
    mlflow_ui_command,
)


@pytest.fixture(scope="module")
def client(tracked_study: TrackedStudy) -> mlflow.MlflowClient:
    return mlflow_client(tracked_study.config)


def trial_run(client: mlflow.MlflowClient, tracked_study: TrackedStudy, number: int):
    trial = tracked_study.study.trials[number]
    return client.get_run(trial.user_attrs["mlflow_run_id"])


def test_the_study_is_a_parent_run_of_one_child_run_per_trial(tracked_study, client):
    config, study = tracked_study.config, tracked_study.study
    experiment = client.get_experiment_by_name("test")
    assert experiment.artifact_location == str(config.state_dir / "mlartifacts")
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.info.run_name == "tracked"
    assert parent.data.tags["smart_tuner.study"] == "tracked"
    assert parent.data.params["objective_metric"] == "val_loss"
    assert '"log": true' in parent.data.params["search.learning_rate"]
    assert parent.data.params["fixed.epochs"] == "2"
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(run.info.run_name for run in children) == [
        f"trial-{number:04d}" for number in range(5)]
    assert {run.info.run_id for run in children} == {
        trial.user_attrs["mlflow_run_id"] for trial in study.trials}


def test_each_child_run_mirrors_its_trials_fate(tracked_study, client):
    expected = [("completed", "FINISHED", TrialState.COMPLETE),
                ("completed", "FINISHED", TrialState.COMPLETE),
                ("completed", "FINISHED", TrialState.COMPLETE),
                ("pruned", "KILLED", TrialState.PRUNED),
                ("failed", "FAILED", TrialState.FAIL)]
    for number, (outcome, status, state) in enumerate(expected):
        trial = tracked_study.study.trials[number]
        run = trial_run(client, tracked_study, number)
        assert trial.state is state
        assert run.info.status == status
        tags = run.data.tags
        assert tags["smart_tuner.outcome"] == outcome == trial.user_attrs["outcome"]
        assert tags["smart_tuner.state"] == state.name and tags["smart_tuner.trial"] == str(number)
        assert tags["smart_tuner.reason"] == trial.user_attrs["reason"]
        assert run.data.params["learning_rate"] == str(trial.params["learning_rate"])
        assert run.data.params["sampling_rate"] == str(trial.params["sampling_rate"])
    pruned = trial_run(client, tracked_study, 3)
    assert pruned.data.tags["smart_tuner.criterion"] == "pruner"
    failed = trial_run(client, tracked_study, 4)
    tail = mlflow.artifacts.load_text(f"{failed.info.artifact_uri}/trainer_log_tail.txt")
    assert "16000" in tail


def test_metrics_have_one_point_per_validated_epoch(tracked_study, client):
    for number, epochs in ((0, [1, 2]), (2, [1, 2]), (3, [1])):
        trial = tracked_study.study.trials[number]
        run = trial_run(client, tracked_study, number)
        for metric in TRACKED_METRICS:
            history = client.get_metric_history(run.info.run_id, metric)
            assert [point.step for point in history] == epochs, metric
        val_loss = [p.value for p in client.get_metric_history(run.info.run_id, "val_loss")]
        assert val_loss[-1] == pytest.approx(trial.user_attrs["last_metrics"]["val_loss"])
        objective = [p.value for p in client.get_metric_history(run.info.run_id, "objective")]
        assert objective == pytest.approx(list(trial.intermediate_values.values()))
    best = trial_run(client, tracked_study, 2)
    assert best.data.metrics["best_objective"] == pytest.approx(tracked_study.study.trials[2].value)


def test_plots_and_audio_samples_are_logged_as_they_are_written(tracked_study, client):
    def files(number: int, folder: str) -> list[str]:
        run_id = trial_run(client, tracked_study, number).info.run_id
        return sorted(Path(item.path).name for item in client.list_artifacts(run_id, folder))

    assert files(2, "alignment") == ["alignment_e0001.npy", "alignment_e0001.png",
                                     "alignment_e0002.npy", "alignment_e0002.png"]
    assert files(2, "mel") == ["mel_e0001.png", "mel_e0002.png"]
    assert files(2, "audio") == ["sample_e0001.wav", "sample_e0002.wav"]
    assert files(0, "audio") == []  # trial 0 ran with artifacts=none


def test_what_a_trial_leaves_on_disk_is_logged_when_it_ends_whatever_its_outcome(
        tmp_path, corpus, mel_cache):
    config = load_config(write_config(tmp_path, corpus, mel_cache, mlflow={"enabled": True}))
    tracker = MlflowTracker(config)
    trial = optuna.create_study(study_name="leftovers").ask()
    artifacts = tmp_path / "trial_0000" / "artifacts"
    artifacts.mkdir(parents=True)
    tracker.trial_started(trial, {"learning_rate": 1e-3}, artifacts.parent)
    early = artifacts / "alignment_e0001.png"
    early.write_bytes(b"logged as it was written")
    tracker.trainer_event(trial, {"event": "artifact", "kind": "alignment_plot",
                                  "path": str(early), "epoch": 1}, None)
    # Written after the tuner stopped listening: the trainer was pruned.
    for name in ("alignment_e0002.png", "alignment_e0002.npy", "mel_e0002.png",
                 "sample_e0002.wav"):
        (artifacts / name).write_bytes(b"written at the end")
    tracker.trial_finished(trial, TrialState.PRUNED, None,
                           {"outcome": "pruned", "criterion": "pruner", "reason": "slow"})

    client = mlflow_client(config)
    run_id = trial.user_attrs["mlflow_run_id"]
    assert client.get_run(run_id).info.status == "KILLED"
    logged = sorted(file.path for folder in client.list_artifacts(run_id)
                    for file in client.list_artifacts(run_id, folder.path))
    assert logged == ["alignment/alignment_e0001.png", "alignment/alignment_e0002.npy",
                      "alignment/alignment_e0002.png", "audio/sample_e0002.wav",
                      "mel/mel_e0002.png"]


def test_the_printed_url_opens_mlflows_model_training_view(tracked_study, client):
    """MLflow's UI (3.17) picks its view from the URL's workflowType, not from a tag."""
    experiment = client.get_experiment_by_name("test").experiment_id
    url = experiment_url("http://127.0.0.1:5000/", experiment)
    assert url == (f"http://127.0.0.1:5000/#/experiments/{experiment}"
                   "?workflowType=machine_learning")
    # What the installed UI reads: the parameter, and that value of it.
    (bundle,) = Path(mlflow.__file__).parent.glob("server/js/build/static/js/main.*.js")
    code = bundle.read_text()
    assert 'MACHINE_LEARNING="machine_learning"' in code and '.get("workflowType")' in code


def test_the_closing_note_opens_mlflow_in_its_training_view(tmp_path, corpus, mel_cache):
    config = load_config(write_config(tmp_path, corpus, mel_cache, mlflow={"enabled": True}))
    note = closing_note(config, optuna.create_study(study_name="s"), "my.yaml")
    experiment = ensure_experiment(mlflow_client(config), config)
    assert (f"then open http://127.0.0.1:5000/#/experiments/{experiment}"
            "?workflowType=machine_learning\n") in note


def test_the_study_run_sums_up_the_study_as_its_trials_end(tracked_study, client):
    study = tracked_study.study
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    metrics, tags = parent.data.metrics, parent.data.tags
    assert (metrics["trials_complete"], metrics["trials_pruned"], metrics["trials_fail"]) == (
        3, 1, 1)
    assert metrics["best_value"] == pytest.approx(study.best_value)
    assert tags["best.trial"] == "2" and tags["best.learning_rate"] == "0.005"
    assert tags["best.sampling_rate"] == "22050"
    # Kept up to date: one point per ended trial (step: trials ended so far), and the
    # best value as it went (trial 0, then trial 2 from the third ended trial on).
    counted = client.get_metric_history(parent.info.run_id, "trials_complete")
    assert [point.step for point in counted][:5] == [1, 2, 3, 4, 5]
    best = {point.step: point.value for point in
            client.get_metric_history(parent.info.run_id, "best_value")}
    assert best[1] == pytest.approx(study.trials[0].value)
    assert best[3] == pytest.approx(study.trials[2].value)


def test_every_run_records_the_code_version_and_the_dataset(tracked_study, client):
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True)
    commit = done.stdout.strip() if done.returncode == 0 else "unknown"
    metadata = (tracked_study.config.dataset_path / "metadata.csv").read_bytes()
    study = tracked_study.study
    run_ids = [study.user_attrs["mlflow_parent_run_id"],
               *(trial.user_attrs["mlflow_run_id"] for trial in study.trials)]
    for run_id in run_ids:
        run = client.get_run(run_id)
        assert run.data.tags["mlflow.source.git.commit"] == commit
        (used,) = run.inputs.dataset_inputs
        assert used.dataset.name == tracked_study.config.dataset_path.name
        assert used.dataset.digest == hashlib.sha256(metadata).hexdigest()[:16]
        assert str(tracked_study.config.dataset_path.resolve()) in used.dataset.source
        assert {tag.key: tag.value for tag in used.tags} == {"mlflow.data.context": "training"}


def test_a_filelist_corpus_is_its_own_dataset_and_a_missing_one_none(tmp_path):
    filelist = tmp_path / "train_filelist.txt"
    filelist.write_text("wavs/a.wav|Hello.\n")
    used = provenance.dataset_input(filelist)
    assert used.dataset.name == "train_filelist"
    assert used.dataset.digest == hashlib.sha256(filelist.read_bytes()).hexdigest()[:16]
    assert provenance.dataset_input(tmp_path / "absent") is None


def test_the_code_version_outside_a_checkout_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "PROJECT_ROOT", tmp_path)
    provenance.code_version.cache_clear()
    try:
        assert provenance.code_version() == "unknown"
    finally:
        provenance.code_version.cache_clear()


def test_a_tracking_failure_does_not_fail_the_trial(corpus, mel_cache, tmp_path, caplog):
    (tmp_path / "a_file").write_text("not a folder")
    path = write_config(tmp_path, corpus, mel_cache,
                        trainer={"hparams": {**TEST_HPARAMS, "epochs": 1}},
                        mlflow={"enabled": True,
                                "tracking_uri": f"sqlite:///{tmp_path / 'a_file' / 'mlflow.db'}"})
    config = load_config(path)
    study = create_study(config, "untracked", 1)
    with caplog.at_level(logging.WARNING):
        run_worker(config, study, poll_s=0.2)
    (trial,) = study.trials
    assert trial.state is TrialState.COMPLETE and "mlflow_run_id" not in trial.user_attrs
    assert "MLflow tracking failed in trial_started" in caplog.text


def test_the_mlflow_ui_command_shows_the_configured_store(tmp_path, corpus, mel_cache):
    config = load_config(write_config(tmp_path, corpus, mel_cache))
    command = mlflow_ui_command(config)
    assert f"--backend-store-uri sqlite:///{tmp_path}/state/mlflow.db" in command
    assert f"--default-artifact-root {tmp_path}/state/mlartifacts" in command
    server = config.model_copy(update={"mlflow": config.mlflow.model_copy(
        update={"tracking_uri": "http://mlflow.example:5000"})})
    assert mlflow_ui_command(server) == "http://mlflow.example:5000"


def test_workers_starting_together_on_a_new_store_all_track(tmp_path, corpus, mel_cache):
    path = write_config(tmp_path, corpus, mel_cache, mlflow={"enabled": True})
    # Each process makes its first use of the new SQLite store at once, as workers do.
    script = ("import sys; from tuner_core.config import load_config; "
              "from tuner_core.tracking import ensure_experiment, mlflow_client; "
              "config = load_config(sys.argv[1]); "
              "print(ensure_experiment(mlflow_client(config), config))")
    processes = [subprocess.Popen([sys.executable, "-c", script, str(path)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
    outcomes = [process.communicate(timeout=scaled(120)) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outcomes
    assert len({out.strip() for out, _ in outcomes}) == 1  # one experiment for all


def test_a_stopped_trials_plots_are_drawn_afterwards_and_logged(tmp_path, corpus, mel_cache):
    # Every trial is pruned at its first validation: its trainer exits without drawing,
    # and the worker draws the plots of its best checkpoint beside the next trial.
    path = write_config(
        tmp_path, corpus, mel_cache, mlflow={"enabled": True},
        trainer={"hparams": {**TEST_HPARAMS, "epochs": 6, "artifacts": "end"}},
        optimization={"n_trials": 1},
        early_stopping={"align": {"type": "alignment", "min_score": 0.99, "by_epoch": 1}})
    config = load_config(path)
    study = create_study(config, "drawn-after", 1)
    run_worker(config, study, poll_s=0.2)
    trial = study.trials[0]
    assert trial.user_attrs["outcome"] == "pruned" and trial.user_attrs["stop_epoch"] == 1
    client = mlflow_client(config)
    run_id = trial.user_attrs["mlflow_run_id"]
    logged = sorted(file.path for folder in ("alignment", "mel", "audio")
                    for file in client.list_artifacts(run_id, folder))
    # The raw alignment (.npy) too, when the render wrote it before the trial's end was
    # recorded (whatever artifacts/ holds then is logged).
    assert {"alignment/alignment_e0001.png", "audio/sample_e0001.wav",
            "mel/mel_e0001.png"} <= set(logged)
    trainer_log = (Path(trial.user_attrs["run_dir"]) / "train.log").read_text()
    assert "stopped: signal SIGTERM" in trainer_log


def drawn_epochs(trial: optuna.trial.FrozenTrial) -> set[int]:
    """The epochs of which a trial's alignment was drawn."""
    folder = Path(trial.user_attrs["run_dir"]) / "artifacts"
    return {int(p.stem.removeprefix("alignment_e")) for p in folder.glob("alignment_e*.png")}


def test_a_trial_that_beats_the_study_best_has_its_plots_drawn_while_it_trains(
        tmp_path, corpus, mel_cache):
    path = write_config(
        tmp_path, corpus, mel_cache, mlflow={"enabled": True},
        trainer={"hparams": {**TEST_HPARAMS, "epochs": 5, "artifacts": "end"}})
    config = load_config(path)
    study = create_study(config, "new-best", 2)
    study.enqueue_trial({"learning_rate": 1e-4})  # barely learns in 5 epochs
    study.enqueue_trial({"learning_rate": 5e-3})  # beats it at its first validations
    run_worker(config, study, poll_s=0.2)
    first, second = study.trials
    assert second.value < first.value

    # The first trial had nothing to beat: drawn once, by its trainer, at its end.
    assert drawn_epochs(first) == {5}
    # The second was drawn while it trained, each time it was the study's new best.
    assert min(drawn_epochs(second)) < 5 and 5 in drawn_epochs(second)
    logged = {file.path for file in mlflow_client(config).list_artifacts(
        second.user_attrs["mlflow_run_id"], "alignment")}
    assert f"alignment/alignment_e{min(drawn_epochs(second)):04d}.png" in logged


def study_runs(config: Config, study: str) -> tuple[list[str], list[str]]:
    """The study's MLflow runs: its parent runs' ids, and each trial run's parent's id."""
    client = mlflow_client(config)
    runs = client.search_runs([ensure_experiment(client, config)],
                              f"tags.`smart_tuner.study` = '{study}'")
    parents = [run.info.run_id for run in runs if "mlflow.parentRunId" not in run.data.tags]
    return parents, [run.data.tags["mlflow.parentRunId"] for run in runs
                     if run.info.run_id not in parents]


def test_the_devices_of_a_worker_track_one_study_run_and_every_trial(tmp_path, corpus, caplog):
    # Each device's tracker finds or makes the study's run at its first trial: two at once
    # made two, and the second's dataset clashed with the first's, which left its trial
    # with no run (and so no model version).
    path = replay_config(tmp_path / "study", early_stopping={}, pruner={"type": "none"})
    settings = yaml.safe_load(path.read_text())
    settings.update(dataset_path=str(corpus), mlflow={"enabled": True})
    settings["trainer"]["devices"] = "cpu:2"
    path.write_text(yaml.safe_dump(settings))
    config = load_config(path)
    study = create_study(config, "together", 4)
    with caplog.at_level(logging.WARNING):
        run_worker(config, study, poll_s=0.05)
    assert "MLflow tracking failed" not in caplog.text
    parents, children_of = study_runs(config, "together")
    assert parents == [study.user_attrs["mlflow_parent_run_id"]]
    assert sorted(children_of) == parents * 4
    assert all("mlflow_run_id" in trial.user_attrs for trial in study.trials)


def test_workers_whose_first_trials_start_together_share_one_study_run(
        tmp_path, corpus, mel_cache):
    path = write_config(tmp_path, corpus, mel_cache, mlflow={"enabled": True})
    create_study(load_config(path), "shared", 3)
    # Each process takes a trial, then starts tracking it at the same instant, as workers
    # on several machines do at a study's start: each finds no study run and makes one.
    script = ("import sys, time; from pathlib import Path; "
              "from tuner_core.config import load_config; "
              "from tuner_core.study import load_study; "
              "from tuner_core.tracking.runs import MlflowTracker; "
              "config = load_config(sys.argv[1]); trial = load_study(config, 'shared').ask(); "
              "tracker = MlflowTracker(config); tracker.experiment_id; "
              "wait = float(sys.argv[2]) - time.time(); print('late' if wait < 0 else ''); "
              "time.sleep(max(0.0, wait)); "
              "tracker.trial_started(trial, {}, Path(sys.argv[1]).parent)")
    at = time.time() + scaled(20)
    processes = [subprocess.Popen([sys.executable, "-c", script, str(path), str(at)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(3)]
    outputs = [process.communicate(timeout=scaled(120))[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    assert not any("late" in output for output in outputs), "they did not start together"
    parents, children_of = study_runs(load_config(path), "shared")
    assert len(parents) == 1, outputs
    assert children_of == parents * 3
