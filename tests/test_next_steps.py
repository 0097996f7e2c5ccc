"""The end of ``tune``: progress until the very end, then the note of what to do next.

The note of a tracked study (registered versions, the champion's figures, MLflow's UI) is
checked by tests/test_readme_tracking.py on a real demo-like study.
"""

import types

import optuna

from tests.test_tuner import write_config
from tuner_core.config import load_config
from tuner_core.reporting.next_steps import closing_note
from tuner_core.reporting.progress import ProgressBars


def test_an_untracked_study_ends_with_the_dashboard_the_report_and_the_bot(
        tmp_path, corpus, mel_cache):
    config = load_config(write_config(tmp_path, corpus, mel_cache))  # mlflow disabled
    study = optuna.create_study(study_name="quiet")
    note = closing_note(config, study, "my.yaml")
    assert f"optuna-dashboard sqlite:///{tmp_path}/state/optuna.db" in note
    assert "then open http://127.0.0.1:8080" in note
    assert "-m tuner_core report --config my.yaml" in note
    assert "run_bot.py --config my.yaml" in note
    assert "MLflow" not in note and "promote" not in note


def test_the_epoch_bar_says_what_happens_after_the_last_epoch():
    bars = ProgressBars(n_trials=2, epochs=3)
    trial = types.SimpleNamespace(number=4)
    try:
        bars.trial_started(trial, {"epochs": 2}, None)
        assert bars.epochs.desc.startswith("trial 4")
        for epoch in (1, 2):
            bars.trainer_event(trial, {"event": "validation", "epoch": epoch,
                                       "val_loss": 0.5}, 0.6)
        assert bars.epochs.n == 2 and "ending (checkpoint, plots, audio)" in bars.epochs.desc
        bars.trainer_event(trial, {"event": "artifact", "path": "/run/mel_e0002.png"}, None)
        assert "wrote mel_e0002.png" in bars.epochs.postfix
        bars.trainer_event(trial, {"event": "end"}, None)
        assert "recording (MLflow, registry)" in bars.epochs.desc
    finally:
        bars.close()
