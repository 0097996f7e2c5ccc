"""The study report: figures and report.md, from the API and from the command line."""

import time
from pathlib import Path

import numpy as np
import optuna
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from tuner_core.__main__ import main
from tuner_core.config import load_config
from tuner_core.reporting.report import write_report
from tuner_core.study import create_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"learning_rate": FloatDistribution(1e-4, 1e-2, log=True)}
# Two completed trials are too few for parameter importances: report.md says so instead.
FIGURES = {"learning_curves.png", "optimization_history.png", "anytime.png",
           "best_alignment.png"}


def add_trials(study: optuna.Study, run_dir: Path) -> None:
    """Four finished trials: the best (with a saved alignment), adapted, pruned, failed."""
    (run_dir / "artifacts").mkdir(parents=True)
    np.save(run_dir / "artifacts" / "alignment_e0003.npy", np.eye(30, 10))

    def add(state, value, lr, curve, **attrs):
        study.add_trial(optuna.trial.create_trial(
            state=state, value=value, params={"learning_rate": lr}, distributions=SPACE,
            intermediate_values=dict(enumerate(curve, start=1)), user_attrs=attrs))

    add(TrialState.COMPLETE, 0.42, 2e-3, [0.9, 0.6, 0.42], outcome="completed",
        reason="trained all 3 epochs", stop_epoch=3, seconds=120.0, run_dir=str(run_dir))
    add(TrialState.COMPLETE, 0.55, 5e-3, [0.8, 0.55, 0.6], outcome="early_stopped",
        criterion="patience", reason="no improvement for 1 epoch", stop_epoch=3, seconds=100.0,
        adaptations=[{"epoch": 2, "criterion": "overfitting", "reason": "gap 0.3 > 0.2",
                      "changes": {"learning_rate": [5e-3, 2.5e-3]}, "time": 0.0}])
    add(TrialState.PRUNED, None, 1e-4, [1.9], outcome="pruned", criterion="pruner",
        reason="MedianPruner: objective 1.9000 at epoch 1 is worse than the other trials",
        stop_epoch=1, seconds=80.0,
        anomalies=[{"metric": "grad_norm", "epoch": 1, "value": 41.2, "zscore": 6.3,
                    "message": "grad_norm spiked to 41.2 at epoch 1"}])
    add(TrialState.FAIL, None, 8e-3, [], outcome="failed", criterion="crash",
        reason="trainer exited with code 1", stop_epoch=0, seconds=0.0)


def test_report_of_a_finished_study(tmp_path: Path):
    study = optuna.create_study(study_name="voices")
    now = time.time()
    for key, value in {"created_at": now - 3600, "finished_at": now, "n_trials": 4,
                       "end_reason": "all trials done",
                       "config": {"objective_metric": "val_loss"}}.items():
        study.set_user_attr(key, value)
    add_trials(study, tmp_path / "runs" / "trial_0000")

    report = write_report(study, tmp_path / "report")

    assert report == tmp_path / "report" / "report.md"
    assert {p.name for p in report.parent.iterdir()} == FIGURES | {"report.md"}
    text = report.read_text()
    for expected in (
            "# Study voices", "- State: finished (all trials done)",
            "- Objective: val_loss, minimize", "- Trials: 4 of a budget of 4",
            "- Best value: 0.42 (trial 0)", "| learning_rate | 0.002 |",
            "| complete | 2 |", "| pruned | 1 |", "| fail | 1 |",
            "| completed | 1 |", "| early_stopped | 1 |", "| failed | 1 |",
            "| 1 | early_stopped | patience | 3 | no improvement for 1 epoch |",
            "| 3 | failed | crash | 0 | trainer exited with code 1 |",
            "| 1 | 2 | overfitting | learning_rate 0.005 → 0.0025 | gap 0.3 > 0.2 |",
            "| 2 | 1 | grad_norm | grad_norm spiked to 41.2 at epoch 1 |",
            "- Study wall time: 1 h 00 min",
            "- Trainer compute, all trials together: 5 min 00 s",
            "![Alignment of the best trial](best_alignment.png)",
            "Parameter importances are not drawn: 2 trials completed; importances need at "
            "least 10, fewer are noise."):
        assert expected in text, expected


def test_report_of_a_study_without_results_drops_stale_figures(tmp_path: Path):
    study = optuna.create_study(study_name="young")
    out = tmp_path / "report"
    out.mkdir()
    (out / "param_importances.png").write_bytes(b"from an earlier report")

    text = write_report(study, out).read_text()

    assert {p.name for p in out.iterdir()} == {"learning_curves.png", "anytime.png",
                                               "optimization_history.png", "report.md"}
    assert "- State: running" in text and "No trial has completed yet." in text


def test_report_command_on_a_stored_study(tmp_path: Path, capsys):
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "dataset_path": str(tmp_path), "state_dir": str(tmp_path / "state"),
        "hyperparameter_search_space": {
            "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "log": True}}}))
    study = create_study(load_config(config_path), "stored", n_trials=4)
    add_trials(study, tmp_path / "runs" / "trial_0000")

    out = tmp_path / "out"
    assert main(["report", "--config", str(config_path), "--study", "stored",
                 "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == FIGURES | {"report.md"}
    assert "| learning_rate | 0.002 |" in (out / "report.md").read_text()
    assert str(out / "report.md") in capsys.readouterr().out

    # Without --out, the latest study's report goes under the state folder.
    assert main(["report", "--config", str(config_path)]) == 0
    assert (tmp_path / "state" / "reports" / "stored" / "report.md").is_file()
