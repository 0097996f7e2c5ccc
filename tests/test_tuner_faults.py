"""Faults around a study: dead workers, racing first uses, unusable storages and stores."""

import subprocess
import sys
import time

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from tests.deadlines import scaled
from tests.test_tuner import ROOT, write_config
from tuner_core.config import load_config
from tuner_core.storage import TRIAL_RUN_ATTR, open_storage
from tuner_core.storage.retries import fail_stale_trials
from tuner_core.study import create_study, load_study, run_worker
from tuner_core.tracking.runs import MlflowTracker

# Imports the tuner, waits for the file argv[2], then opens the study of argv[1]'s config:
# several of these started together reach the new database within milliseconds.
FIRST_USE = """
import sys, time
from pathlib import Path
from tuner_core.config import load_config
from tuner_core.study import create_study
config = load_config(sys.argv[1])
Path(sys.argv[3]).touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.005)
create_study(config, "raced", 1)
"""


def test_processes_opening_a_new_sqlite_storage_at_once_all_succeed(tmp_path, corpus,
                                                                    mel_cache):
    path = write_config(tmp_path, corpus, mel_cache)
    go = tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", FIRST_USE, str(path), str(go),
                                   str(tmp_path / f"ready{n}")],
                                  cwd=ROOT, stderr=subprocess.PIPE, text=True)
                 for n in range(4)]
    deadline = time.monotonic() + scaled(120)
    while not all((tmp_path / f"ready{n}").exists() for n in range(4)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes)
        time.sleep(0.05)
    go.touch()
    for process in processes:
        assert process.wait(timeout=scaled(120)) == 0, process.stderr.read()[-2000:]
    assert [s.study_name for s in optuna.get_all_study_summaries(
        open_storage(load_config(path)))] == ["raced"]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_a_dead_workers_trial_and_its_mlflow_run_are_closed_with_the_reason(
        tmp_path, corpus, mel_cache):
    path = write_config(tmp_path, corpus, mel_cache, mlflow={"enabled": True},
                        optimization={"heartbeat_interval_s": 1, "heartbeat_grace_s": 2})
    config = load_config(path)
    study = create_study(config, "lost", 1)
    tracker = MlflowTracker(config)
    # A worker starts trial 0, beats once and dies.
    lost = study.ask()
    tracker.trial_started(lost, {"learning_rate": 1e-3}, tmp_path / "run0")
    storage = open_storage(config)
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("lost"), lost.number))
    deadline = time.monotonic() + scaled(60)
    while study.get_trials(deepcopy=False)[0].state is TrialState.RUNNING:
        assert time.monotonic() < deadline, "the trial never went stale"
        time.sleep(0.5)
        fail_stale_trials(study)  # what a surviving worker does before it takes a trial
    # The survivor runs the retry, trial 1.
    retry = study.ask()
    assert retry.number == 1
    tracker.trial_started(retry, {"learning_rate": 1e-3}, tmp_path / "run1")

    dead = load_study(config, "lost").trials[0]  # as another process reads it
    assert dead.state is TrialState.FAIL
    assert dead.user_attrs["outcome"] == "failed"
    assert dead.user_attrs["criterion"] == "worker_lost"
    assert dead.user_attrs["reason"] == "worker lost; retried as trial 1"
    run = mlflow.MlflowClient(config.tracking_uri).get_run(dead.user_attrs[TRIAL_RUN_ATTR])
    assert run.info.status == "FAILED" and run.info.end_time is not None
    assert run.data.tags["smart_tuner.reason"] == "worker lost; retried as trial 1"
    assert run.data.tags["smart_tuner.state"] == "FAIL"
    assert "outcome" not in study.get_trials(deepcopy=False)[1].user_attrs


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
@pytest.mark.parametrize("survivor", ["starts_a_trial", "ends_the_study"])
def test_a_dead_workers_run_is_closed_when_its_retries_are_used_up(tmp_path, corpus, mel_cache,
                                                                   survivor):
    path = write_config(tmp_path, corpus, mel_cache, mlflow={"enabled": True},
                        optimization={"heartbeat_interval_s": 1, "heartbeat_grace_s": 2,
                                      "max_retries": 0})
    config = load_config(path)
    budget = 2 if survivor == "starts_a_trial" else 1
    study = create_study(config, "lost", budget)
    # A worker starts trial 0, beats once and dies (SIGKILL: nothing of it ends the run).
    lost = study.ask()
    MlflowTracker(config).trial_started(lost, {"learning_rate": 1e-3}, tmp_path / "run0")
    storage = open_storage(config)
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("lost"), lost.number))
    if survivor == "starts_a_trial":
        # The survivor fails the stale trial (not retried), then starts the next one.
        deadline = time.monotonic() + scaled(60)
        while study.get_trials(deepcopy=False)[0].state is TrialState.RUNNING:
            assert time.monotonic() < deadline, "the trial never went stale"
            time.sleep(0.5)
            fail_stale_trials(study)
        MlflowTracker(config).trial_started(study.ask(), {"learning_rate": 1e-3},
                                            tmp_path / "run1")
    else:
        # The survivor fails the stale trial, finds the budget spent and ends the study.
        run_worker(config, study, poll_s=0.2)
        assert study.user_attrs["end_reason"] == "all trials done"

    dead = load_study(config, "lost").trials[0]
    reason = "worker lost; not retried (max_retries reached)"
    assert dead.state is TrialState.FAIL and dead.user_attrs["reason"] == reason
    run = mlflow.MlflowClient(config.tracking_uri).get_run(dead.user_attrs[TRIAL_RUN_ATTR])
    assert run.info.status == "FAILED" and run.info.end_time is not None
    assert run.data.tags["smart_tuner.reason"] == reason
    assert run.data.tags["smart_tuner.outcome"] == "failed"


# A trainer that dies as one does on a full disk: a traceback, then blank lines.
FULL_DISK = """#!/bin/sh
echo 'Traceback (most recent call last):' >&2
echo '  File "train/tacotron2/checkpoint.py", line 80, in save' >&2
echo "OSError: [Errno 28] No space left on device: '{folder}/last.pt'" >&2
echo '' >&2
exit 1
"""


@pytest.mark.parametrize("folder", ["/data/runs", "/data/" + "very_long_folder/" * 15 + "runs"])
def test_a_crashed_trainers_last_words_are_the_trials_reason(tmp_path, corpus, mel_cache,
                                                            folder):
    trainer = tmp_path / "full_disk_python"
    trainer.write_text(FULL_DISK.format(folder=folder))
    trainer.chmod(0o755)
    path = write_config(tmp_path, corpus, mel_cache, optimization={"n_trials": 1},
                        trainer={"python": str(trainer), "preload": False})
    config = load_config(path)
    study = create_study(config, "full", 1)
    run_worker(config, study, poll_s=0.2)

    (crashed,) = load_study(config, "full").trials
    assert crashed.state is TrialState.FAIL and crashed.user_attrs["exit_code"] == 1
    error = f"OSError: [Errno 28] No space left on device: '{folder}/last.pt'"
    reason = crashed.user_attrs["reason"]
    if len(error) <= 200:
        assert reason == f"trainer exited with code 1: {error}"
    else:  # cut in the middle: the error's name and the file's stay
        last_words = reason.removeprefix("trainer exited with code 1: ")
        assert len(last_words) == 200 and "…" in last_words
        assert last_words.startswith("OSError: [Errno 28] No space left on device: '/data/")
        assert last_words.endswith("/runs/last.pt'")
    assert error in crashed.user_attrs["log_tail"]
