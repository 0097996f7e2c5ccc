"""A champion confirmed over training seeds, as every view shows it: the CLI, the chat,
the report, the model card."""

from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from bot import messages
from tuner_core.config import load_config
from tuner_core.reporting import best_trial, confirmation_line
from tuner_core.reporting.events import Kind, Notification
from tuner_core.reporting.report import render_markdown
from tuner_core.storage import CONFIRMS_ATTR, TRAINING_SEED_ATTR
from tuner_core.tracking.registry import model_card

SPACE = {"learning_rate": FloatDistribution(1e-4, 1e-2, log=True)}


def add(study: optuna.Study, value: float | None, lr: float, state=TrialState.COMPLETE,
        **attrs) -> None:
    study.add_trial(optuna.trial.create_trial(
        state=state, value=value, params={"learning_rate": lr}, distributions=SPACE,
        intermediate_values={1: value or 9.0}, user_attrs={"outcome": "completed", **attrs}))


def confirmed_study() -> optuna.Study:
    """Trial 0 is the best single draw; trial 1's configuration has the best mean."""
    study = optuna.create_study(study_name="c")
    add(study, 4.0, 1e-3)
    add(study, 4.2, 2e-3)
    add(study, 5.0, 3e-3)
    for value in (5.0, 5.2):
        add(study, value, 1e-3, **{CONFIRMS_ATTR: 0, TRAINING_SEED_ATTR: 1235})
    for value in (4.3, 4.4):
        add(study, value, 2e-3, **{CONFIRMS_ATTR: 1, TRAINING_SEED_ATTR: 1235})
    return study


def test_the_champion_is_the_configuration_of_the_best_mean():
    best = best_trial(confirmed_study())
    assert best["number"] == 1 and best["value"] == 4.2
    confirmation = best["confirmation"]
    assert confirmation["seeds"] == 3 and confirmation["trials"] == [1, 5, 6]
    assert abs(confirmation["mean"] - 4.3) < 1e-9 and confirmation["done"]
    assert confirmation_line(confirmation).startswith("confirmed over 3 training seeds: mean "
                                                      "4.3000 ± 0.1000")


def test_until_every_confirmation_ends_the_best_single_trial_leads():
    study = confirmed_study()
    add(study, None, 2e-3, TrialState.RUNNING, **{CONFIRMS_ATTR: 1})
    best = best_trial(study)
    assert best["number"] == 0 and best["confirmation"] is None
    assert confirmation_line(None).startswith("not confirmed: one training seed")


def test_the_chat_says_whether_the_champion_is_confirmed():
    study = confirmed_study()
    best = {**best_trial(study), "study_name": "c"}
    assert "✔️ Confirmed over 3 training seeds: mean <b>4.3</b> ± 0.1" in messages.best_text(
        best, None)
    single = {**best, "confirmation": None}
    assert "Not confirmed: one training seed" in messages.best_text(single, None)
    rows = [{"number": 5, "state": "COMPLETE", "outcome": "completed", "value": 5.0,
             "reason": "trained all 24 epochs", "confirms": 0}]
    assert "confirms 0" in messages.trials_text("c", rows)
    finished = Notification("trial:c:5:finished", Kind.TRIAL_COMPLETE, "c", {
        "trial": 5, "state": "COMPLETE", "outcome": "completed", "value": 5.0,
        "new_best": False, "retried": False, "duration_s": 9.0, "params": {},
        "criterion": None, "reason": "trained all 24 epochs", "recommendation": "",
        "stop_epoch": 24, "confirms": 0, "exit_code": 0, "log_tail": ""})
    assert "It confirms trial 0 with another training seed" in messages.notification_text(
        finished)


def test_the_report_and_the_model_card_show_the_mean_over_seeds(tmp_path: Path):
    study = confirmed_study()
    assert "- Champion: confirmed over 3 training seeds" in render_markdown(study, {})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(f"dataset_path: {tmp_path}\nstate_dir: {tmp_path / 'state'}\n")
    info = {"version": "2", "aliases": [], "study": "c", "trial": 1, "value": 4.2,
            "objective_metric": "val_loss", "params": {}, "metrics": {}, "created": 0,
            "run_id": "r", "confirmation": {"mean": 4.3, "std": 0.1, "seeds": 3}}
    card = model_card(load_config(config_path), info, "sample.wav")
    assert "its configuration over 3 training seeds: mean **4.3** ± 0.1" in card
    assert "from one training seed (not confirmed)" in model_card(
        load_config(config_path), {**info, "confirmation": None}, "sample.wav")
