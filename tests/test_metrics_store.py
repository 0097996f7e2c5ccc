"""A trial's metrics: anomalies found in its series, and what the storage keeps of them."""

import json
import math
from pathlib import Path

import numpy as np
import optuna
import yaml

from tuner_core.config import load_config
from tuner_core.rules.metric_history import detect_anomalies
from tuner_core.trial.runner import TrialRunner


def steady(n: int, level: float = 2.0) -> list[float]:
    """``n`` values wiggling around ``level`` by ±2.5 %."""
    return [level * (1 + 0.025 * (-1) ** i) for i in range(n)]


def test_a_gradient_spike_is_reported_with_its_epoch():
    history = {"epoch": list(range(1, 11)), "grad_norm": [*steady(9), 41.2]}
    (anomaly,) = detect_anomalies(history)
    assert (anomaly.metric, anomaly.epoch, anomaly.value) == ("grad_norm", 10, 41.2)
    assert anomaly.zscore > 100
    assert anomaly.message.startswith("grad_norm spiked to 41.2 at epoch 10 (z=")
    assert anomaly.message.endswith("against the previous 9 validations)")


def test_a_smoothly_falling_noisy_loss_raises_no_alarm():
    rng = np.random.default_rng(0)
    epochs = np.arange(1, 101)
    history = {"epoch": epochs.tolist()}
    for metric, level, noise in (("train_loss", 0.3, 0.02), ("val_loss", 0.4, 0.03),
                                 ("grad_norm", 1.0, 0.2)):
        curve = level + 2.0 * np.exp(-epochs / 15) + rng.normal(0, noise, epochs.size)
        history[metric] = curve.tolist()
    assert detect_anomalies(history) == []
    # The same curve with one jump of ten noise widths is caught.
    history["val_loss"][60] += 0.3
    assert [(a.metric, a.epoch) for a in detect_anomalies(history)] == [("val_loss", 61)]


def test_nan_and_null_are_anomalies():
    history = {"epoch": [1, 2, 3], "train_loss": [1.0, math.nan, 0.9],
               "val_loss": [1.0, 1.0, None]}
    found = detect_anomalies(history)
    assert [(a.metric, a.epoch, a.value, a.zscore) for a in found] == [
        ("train_loss", 2, None, None), ("val_loss", 3, None, None)]
    assert found[0].message == "train_loss became NaN or inf at epoch 2"


def test_a_jump_in_a_short_history_is_not_judged():
    history = {"epoch": [1, 2, 3, 4], "val_loss": [1.0, 1.0, 1.0, 50.0]}
    assert detect_anomalies(history, min_history=5) == []
    assert len(detect_anomalies(history, min_history=3)) == 1


def test_a_flat_window_still_catches_a_jump_without_dividing_by_zero():
    flat = {"epoch": list(range(1, 8)), "val_loss": [1.0] * 7}
    assert detect_anomalies(flat) == []
    assert detect_anomalies({**flat, "val_loss": [0.0] * 7}) == []
    jumped = {**flat, "val_loss": [1.0] * 6 + [1.5]}
    assert [a.epoch for a in detect_anomalies(jumped)] == [7]


def test_since_checks_only_the_newest_validations():
    history = {"epoch": list(range(1, 12)), "grad_norm": [*steady(9), 41.2, 2.0]}
    assert len(detect_anomalies(history)) == 1
    assert detect_anomalies(history, since=10) == []
    assert [a.epoch for a in detect_anomalies(history, since=9)] == [10]


def run_fake_trainer(tmp_path: Path, grad_norms: list[float]) -> optuna.trial.FrozenTrial:
    """One trial of a fake trainer that replays a validation per ``grad_norms`` value."""
    lines = [{"event": "validation", "time": 0.0, "epoch": epoch, "step": 10 * epoch,
              "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch, "val_mel_loss": 1.0 / epoch,
              "val_gate_loss": 0.1, "grad_norm": grad_norm, "lr": 1e-3,
              "alignment_score": 0.5, "stop_rate": 0.5, "seconds": float(epoch),
              "epoch_end": True}
             for epoch, grad_norm in enumerate(grad_norms, start=1)]
    lines.append({"event": "end", "time": 0.0, "status": "done", "epoch": len(grad_norms),
                  "step": 10 * len(grad_norms), "seconds": float(len(grad_norms))})
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    trainer = tmp_path / "fake_trainer"
    trainer.write_text(f"#!/bin/sh\ncat {events}\n")
    trainer.chmod(0o755)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "dataset_path": str(tmp_path), "state_dir": str(tmp_path / "state"),
        "trainer": {"python": str(trainer)},
        "hyperparameter_search_space": {
            "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2}},
        "optimization": {"pruner": {"type": "none"}}}))

    study = optuna.create_study()
    study.optimize(TrialRunner(load_config(config), "fake", poll_s=0.1), n_trials=1)
    (trial,) = study.trials
    return trial


def test_the_runner_records_anomalies_on_the_trial(tmp_path: Path):
    """A fake trainer replays validation events with a gradient spike at epoch 8."""
    trial = run_fake_trainer(tmp_path, [*steady(7, level=3.0), 60.0, 3.0])
    assert trial.user_attrs["outcome"] == "completed"
    (anomaly,) = trial.user_attrs["anomalies"]
    assert (anomaly["metric"], anomaly["epoch"], anomaly["value"]) == ("grad_norm", 8, 60.0)
    assert anomaly["message"].startswith("grad_norm spiked to 60 at epoch 8")


def test_the_storage_keeps_one_number_per_validation(tmp_path: Path):
    """Per-epoch values are the trial's intermediate values (what Optuna's tools plot), not
    a user attribute that ``optuna trials`` would print on every row (issue 22, item 18)."""
    trial = run_fake_trainer(tmp_path, steady(40, level=3.0))
    assert list(trial.intermediate_values) == list(range(1, 41))
    assert trial.value == min(trial.intermediate_values.values())  # the objective's
    assert "history" not in trial.user_attrs
    assert trial.user_attrs["last_metrics"]["epoch"] == 40  # the latest validation alone
    # 40 epochs leave the user attributes as small as 1: a row of `optuna trials` stays short.
    assert len(json.dumps(trial.user_attrs)) < 1500
