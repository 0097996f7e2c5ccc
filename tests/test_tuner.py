"""The tuning engine end to end: real tiny studies of real trainer subprocesses."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.conftest import TEST_HPARAMS
from tests.deadlines import scaled
from tuner_core import SmartTuner
from tuner_core.config import load_config
from tuner_core.study import create_study, load_study, request_stop, run_worker

ROOT = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, corpus: Path, mel_cache: Path, **sections) -> Path:
    """A study config on the test corpus with the tiny test model; ``sections`` override."""
    config = {
        "experiment_name": "test",
        "dataset_path": str(corpus),
        "state_dir": str(tmp_path / "state"),
        # One thread: `make test` runs two test processes at once on two cores.
        "trainer": {"grace_period_s": 20, "threads": 1,
                    "hparams": {**TEST_HPARAMS, "epochs": 4}},
        "hyperparameter_search_space": {
            "learning_rate": {"type": "float", "min": 1e-4, "max": 5e-3, "log": True}},
        "optimization": {"n_trials": 2, "seed": 0,
                         "sampler": {"type": "random"},
                         "pruner": {"type": "none"},
                         "heartbeat_interval_s": 1, "heartbeat_grace_s": 4},
        "early_stopping": {},
        "mlflow": {"enabled": False},  # tracking has its own tests; it costs seconds per study
        "evaluation": {"enabled": False},  # tests/test_listening.py has its own; seconds a trial
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    fixed = config["trainer"]["hparams"]
    for searched in config["hyperparameter_search_space"]:
        fixed.pop(searched, None)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # Trials share the session's mel cache, so each computes no mel twice.
    (tmp_path / "state").mkdir(exist_ok=True)
    os.symlink(mel_cache, tmp_path / "state" / "mel_cache")
    return path


def attrs(trial: optuna.trial.FrozenTrial) -> dict:
    return trial.user_attrs


def test_run_optimization_returns_the_best_parameters(corpus, mel_cache, tmp_path):
    path = write_config(tmp_path, corpus, mel_cache)
    result = SmartTuner(path).run_optimization(n_trials=2, study_name="api")
    assert result["study_name"] == "api" and result["n_trials"] == 2
    assert result["states"] == {"COMPLETE": 2}
    assert set(result["best_parameters"]) == {"learning_rate"}
    assert 1e-4 <= result["best_parameters"]["learning_rate"] <= 5e-3
    study = load_study(load_config(path), "api")
    assert result["best_value"] == study.best_value
    for trial in study.trials:
        assert attrs(trial)["outcome"] == "completed"
        assert len(trial.intermediate_values) == 4
        assert min(trial.intermediate_values.values()) == pytest.approx(trial.value)
        assert Path(attrs(trial)["best_checkpoint"]).is_file()
    assert study.user_attrs["end_reason"] == "all trials done"


def test_weak_trials_are_pruned_or_stopped_with_their_reason(corpus, mel_cache, tmp_path):
    path = write_config(
        tmp_path, corpus, mel_cache,
        optimization={"n_trials": 3, "pruner": {"type": "median", "n_startup_trials": 1,
                                                 "n_warmup_steps": 0}},
        early_stopping={"patience": {"type": "patience", "patience": 1, "min_delta": 100.0}})
    config = load_config(path)
    study = create_study(config, "weak", 3)
    # The first trial sets the bar; the second learns far too slowly and is pruned at once;
    # patience with an unreachable min_delta stops the third after one epoch without gain.
    study.enqueue_trial({"learning_rate": 5e-3})
    study.enqueue_trial({"learning_rate": 1e-4})
    run_worker(config, study, poll_s=0.2)
    first, second, third = study.trials
    assert attrs(second)["outcome"] == "pruned" and second.state is TrialState.PRUNED
    assert attrs(second)["criterion"] == "pruner" and attrs(second)["stop_epoch"] == 1
    assert "worse than the other trials" in attrs(second)["reason"]
    for trial in (first, third):
        if trial.state is TrialState.COMPLETE:
            assert attrs(trial)["outcome"] == "early_stopped"
            assert attrs(trial)["criterion"] == "patience" and attrs(trial)["stop_epoch"] == 2
            assert "improved" in attrs(trial)["reason"] and attrs(trial)["recommendation"]
            assert trial.value == min(trial.intermediate_values.values())


def test_overfitting_adapts_and_restarts_from_the_best_checkpoint(corpus, mel_cache, tmp_path):
    # Half the corpus held out and no dropout: from about epoch 8 on, the model learns
    # its 10 training clips faster than it generalises, and validation loss stays above
    # training loss.
    no_dropout = {"p_prenet_dropout": 0.0, "p_decoder_dropout": 0.0, "p_attention_dropout": 0.0}
    path = write_config(
        tmp_path, corpus, mel_cache,
        optimization={"n_trials": 1, "max_adaptations": 1,
                      "adaptation": {"learning_rate_factor": 0.5, "dropout_increase": 0.1,
                                     "weight_decay_factor": 10.0}},
        early_stopping={"overfitting": {"type": "overfitting", "overfitting_threshold": 0.05,
                                        "warmup_epochs": 7, "consecutive": 2}},
        trainer={"hparams": {**TEST_HPARAMS, **no_dropout, "epochs": 14, "val_fraction": 0.5}})
    config = load_config(path)
    study = create_study(config, "adapt", 1)
    study.enqueue_trial({"learning_rate": 5e-3})
    run_worker(config, study, poll_s=0.2)
    (trial,) = study.trials
    (adaptation,) = attrs(trial)["adaptations"][:1]
    assert adaptation["criterion"] == "overfitting" and adaptation["epoch"] >= 8
    assert "above train_loss" in adaptation["reason"]
    assert adaptation["changes"]["learning_rate"] == [5e-3, 2.5e-3]
    assert adaptation["changes"]["p_decoder_dropout"] == [0.0, 0.1]
    assert adaptation["changes"]["p_attention_dropout"] == [0.0, 0.1]
    log = (Path(attrs(trial)["run_dir"]) / "train.log").read_text()
    assert f"resumed from {Path(attrs(trial)['run_dir']) / 'best.pt'}" in log
    # After its one adaptation the trial trains out, or overfits again and is stopped.
    assert trial.state is TrialState.COMPLETE
    assert attrs(trial)["outcome"] in ("completed", "early_stopped")
    if attrs(trial)["outcome"] == "early_stopped":
        assert "no adaptations left" in attrs(trial)["reason"]


def test_a_stop_request_ends_the_running_trial_and_the_study(corpus, mel_cache, tmp_path):
    path = write_config(tmp_path, corpus, mel_cache, optimization={"n_trials": 3},
                        trainer={"hparams": {**TEST_HPARAMS, "epochs": 200}})
    config = load_config(path)
    study = create_study(config, "stop", 3)
    worker = threading.Thread(target=run_worker, args=(config, study), kwargs={"poll_s": 0.2})
    worker.start()
    deadline = time.time() + scaled(120)
    while not study.get_trials(states=(TrialState.RUNNING,)) or not any(
            t.user_attrs.get("last_metrics") for t in study.get_trials()):
        assert time.time() < deadline, "no validation within the (scaled) two minutes"
        time.sleep(0.5)
    request_stop(study, by="test")
    asked = time.time()
    worker.join(timeout=scaled(60))
    assert not worker.is_alive()
    assert time.time() - asked < scaled(30)
    (trial,) = study.trials
    assert trial.state is TrialState.PRUNED and attrs(trial)["outcome"] == "stopped_by_user"
    assert study.user_attrs["end_reason"] == "stopped on request"
    assert (Path(attrs(trial)["run_dir"]) / "last.pt").is_file()


def test_a_crashing_trainer_fails_its_trial_and_the_study_goes_on(corpus, mel_cache, tmp_path):
    # The corpus is 22050 Hz; a trial that asks for 16000 Hz fails on the first clip.
    path = write_config(tmp_path, corpus, mel_cache, optimization={"n_trials": 2},
                        hyperparameter_search_space={
                            "sampling_rate": {"type": "categorical", "choices": [16000, 22050]}})
    config = load_config(path)
    study = create_study(config, "crash", 2)
    study.enqueue_trial({"sampling_rate": 16000})
    study.enqueue_trial({"sampling_rate": 22050})
    run_worker(config, study, poll_s=0.2)
    crashed, healthy = study.trials
    assert crashed.state is TrialState.FAIL
    assert attrs(crashed)["outcome"] == "failed" and attrs(crashed)["exit_code"] == 1
    assert "16000" in attrs(crashed)["log_tail"] and "DEMO-" in attrs(crashed)["log_tail"]
    assert healthy.state is TrialState.COMPLETE


def test_a_killed_workers_trial_is_retried_and_resumed_by_another(corpus, mel_cache, tmp_path):
    path = write_config(tmp_path, corpus, mel_cache, optimization={"n_trials": 1},
                        trainer={"hparams": {**TEST_HPARAMS, "epochs": 6}})
    config = load_config(path)
    study = create_study(config, "kill", 1)
    command = [sys.executable, "-m", "tuner_core", "worker", "--config", str(path),
               "--study", "kill", "--quiet"]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + scaled(120)
    while not any((t.user_attrs.get("last_metrics") or {}).get("epoch", 0) >= 2
                  for t in study.get_trials()):
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = study.trials[0]
    run_dir = Path(killed.user_attrs["run_dir"])
    # The orphaned trainer got SIGTERM from the kernel, saved and left.
    deadline = time.time() + scaled(30)
    while "stopped: signal SIGTERM" not in (run_dir / "train.log").read_text():
        assert time.time() < deadline
        time.sleep(0.5)
    time.sleep(5)  # let the heartbeat go stale

    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            timeout=scaled(300))
    assert second.returncode == 0, second.stderr[-2000:]
    killed, retry = study.trials
    assert killed.state is TrialState.FAIL and retry.state is TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == killed.params
    log = (Path(retry.user_attrs["run_dir"]) / "train.log").read_text()
    assert f"resumed from {run_dir / 'last.pt'}" in log
    # Resumed, not restarted: the retry trained only the epochs the first one had not.
    assert 0 < len(retry.intermediate_values) <= 4
    assert retry.user_attrs["epochs_trained"] == 6
    assert study.user_attrs["end_reason"] == "all trials done"


def test_the_same_code_runs_a_study_on_postgresql(corpus, mel_cache, tmp_path, postgres_url):
    path = write_config(tmp_path, corpus, mel_cache, storage=postgres_url,
                        trainer={"hparams": {**TEST_HPARAMS, "epochs": 2}})
    tuner = SmartTuner(path)
    result = tuner.run_optimization(n_trials=1, study_name="on-postgres")
    assert result["states"] == {"COMPLETE": 1}
    assert tuner.status("on-postgres")["state"] == "finished"
    assert tuner.studies()[-1]["study_name"] == "on-postgres"
    assert not (tmp_path / "state" / "optuna.db").exists()


# torch never takes more threads than cores, so both cases expect fewer than its default.
@pytest.mark.parametrize(("configured", "cores", "expected"), [(1, 4, 1), (None, 1, 1)])
def test_each_trainer_gets_the_configured_or_its_share_of_the_threads(
        corpus, mel_cache, tmp_path, monkeypatch, configured, cores, expected):
    from tuner_core.trial import runner

    monkeypatch.setattr(runner.os, "cpu_count", lambda: cores)
    path = write_config(tmp_path, corpus, mel_cache, optimization={"n_trials": 1},
                        trainer={"threads": configured,
                                 "hparams": {**TEST_HPARAMS, "epochs": 1}})
    config = load_config(path)
    study = create_study(config, "threads", 1)
    run_worker(config, study, poll_s=0.2)
    log = (Path(attrs(study.trials[0])["run_dir"]) / "train.log").read_text()
    assert f"({expected} threads)" in log
