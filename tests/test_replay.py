"""The replay trainer on the recorded demo table, alone and as a whole study's trainer: a
fast, deterministic fixture of the real tuner (sampler, pruner, criteria, runner, storage)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

import train.replay
from train.replay import Replay, find_run, load_table, nearest_config, recorded_seed
from train.tacotron2.events import parse
from tuner_core import ConfigError, load_config
from tuner_core.reporting import best_trial
from tuner_core.storage import CONFIRMS_ATTR, TRAINING_SEED_ATTR, confirmation_groups
from tuner_core.study import create_study, run_worker
from tuner_core.trial import TrialListener
from tuner_core.trial.rendering import BackgroundRenders

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "bench" / "curves" / "demo.json.gz"


@pytest.fixture(scope="module")
def table() -> dict:
    return load_table(TABLE)


def replay_config(tmp_path: Path, early_stopping: dict | None = None, **optimization) -> Path:
    """config/demo.yaml with each trial replayed from the table; ``optimization`` and
    ``early_stopping`` change the demo's."""
    settings = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    if early_stopping is not None:
        settings["early_stopping"] = early_stopping
    settings.update(dataset_path=str(tmp_path), state_dir=str(tmp_path / "state"),
                    mlflow={"enabled": False})
    settings["trainer"].update(replay=str(TABLE), preload=False, grace_period_s=5)
    settings["trainer"]["hparams"]["artifacts"] = "none"
    settings["optimization"].update(optimization)
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def events_of(lines: str) -> list[dict]:
    return [event for line in lines.splitlines() if (event := parse(line))]


def test_the_table_covers_the_demo_search_space(table):
    space = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())[
        "hyperparameter_search_space"]
    assert len(table["configs"]) >= 32 and len(table["settings"]["seeds"]) >= 3
    assert len(table["runs"]) == len(table["configs"]) * len(table["settings"]["seeds"])
    for name, spec in space.items():
        values = {config[name] for config in table["configs"]}
        if spec["type"] == "categorical":
            assert values == set(spec["choices"])
        else:
            assert spec["min"] <= min(values) < max(values) <= spec["max"]
    epochs = table["settings"]["fixed_hparams"]["epochs"]
    for run in table["runs"]:
        assert [v["epoch"] for v in run["validations"]] == list(range(1, epochs + 1))
    assert TABLE.stat().st_size < 2_000_000


def test_the_replay_emits_the_recorded_run_as_the_trainer_does(table, tmp_path):
    config = table["configs"][5]
    hparams = {**table["settings"]["fixed_hparams"], **config, "artifacts": "none"}
    done = subprocess.run(
        [sys.executable, "-m", "train.replay", "--table", str(TABLE), "--data", "unused",
         "--out", str(tmp_path / "run"), "--hparams", json.dumps(hparams), "--no-log-file"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    events = events_of(done.stdout)
    run = find_run(table, {**hparams, "seed": 1234})
    assert run["index"] == 5
    assert [e["event"] for e in events[:2]] == ["start", "validation"]
    validations = [e for e in events if e["event"] == "validation"]
    assert [{k: v for k, v in e.items() if k not in ("event", "time")} for e in validations] == (
        run["validations"])
    best = [e for e in events if e["event"] == "checkpoint" and e["kind"] == "best"]
    assert best and all(e["is_best"] for e in best)
    assert events[-1]["event"] == "end" and events[-1]["status"] == "done"
    assert json.loads((tmp_path / "run" / "best.pt").read_text())["epoch"] == best[-1]["epoch"]


def test_the_replay_stops_on_sigterm_between_epochs(table, tmp_path, monkeypatch, capsys):
    run = table["runs"][0]
    replay = Replay(run, tmp_path, {"seed": 1}, None)
    emitted = []

    def emit(kind, /, **fields):  # SIGTERM arrives while the third epoch's events go out
        emitted.append((kind, fields))
        if kind == "validation" and fields["epoch"] == 3:
            replay._on_signal(signal.SIGTERM, None)

    monkeypatch.setattr(train.replay, "emit", emit)
    assert replay() == 0
    kind, end = emitted[-1]
    assert kind == "end" and end["status"] == "stopped" and end["epoch"] == 3
    assert [f["epoch"] for k, f in emitted if k == "validation"] == [1, 2, 3]
    assert json.loads((tmp_path / "last.pt").read_text())["epoch"] == 3


def test_a_resumed_replay_goes_on_after_the_checkpoints_epoch(table, tmp_path, monkeypatch):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_text(json.dumps({"replay": True, "epoch": 10}))
    emitted = []
    monkeypatch.setattr(train.replay, "emit",
                        lambda kind, /, **fields: emitted.append((kind, fields)))
    Replay(table["runs"][0], tmp_path / "run", {"seed": 1}, checkpoint)()
    assert emitted[0][1]["epoch"] == 10 and emitted[0][1]["resumed_from"] == str(checkpoint)
    assert [f["epoch"] for k, f in emitted if k == "validation"] == list(range(11, 25))


def test_the_nearest_configuration_and_the_seed_it_plays(table):
    for index, config in enumerate(table["configs"]):
        assert nearest_config(table, config) == index
    config = table["configs"][0]
    other = next(c for c in table["configs"] if c["lr_schedule"] != config["lr_schedule"])
    # A categorical value decides over any distance of the continuous ones.
    assert table["configs"][nearest_config(table, {**other, "lr_schedule": config[
        "lr_schedule"]})]["lr_schedule"] == config["lr_schedule"]
    seeds = table["settings"]["seeds"]
    # A seed and the next ones (a champion's confirmation) play different recorded seeds.
    for base in (1234, 0, 4200):
        assert sorted(recorded_seed(table, 3, base + k) for k in range(len(seeds))) == seeds
    # Trials of one study draw their seeds at random over the configurations.
    assert len({recorded_seed(table, index, 1234) for index in range(len(table["configs"]))}) > 1


def test_a_replayed_study_is_deterministic_and_each_trial_ends_at_its_decision(tmp_path):
    def study(folder: str):
        config = load_config(replay_config(tmp_path / folder, n_trials=10))
        created = create_study(config, "replayed", 10)
        run_worker(config, created, poll_s=0.05)
        return created.get_trials()

    first, second = study("a"), study("b")
    assert [(t.state, t.value, t.params) for t in first] == [
        (t.state, t.value, t.params) for t in second]
    assert {t.state for t in first} >= {TrialState.PRUNED, TrialState.COMPLETE}
    for trial in first:
        # The replay has emitted its whole run at once: the trial's record must end at the
        # pruner's or a criterion's decision, not at the run's last epoch.
        assert len(trial.intermediate_values) == trial.user_attrs["stop_epoch"], trial.number
        if trial.state is TrialState.PRUNED:
            assert trial.user_attrs["stop_epoch"] < 24


def test_confirmation_trains_the_champions_again_with_other_seeds(tmp_path):
    # The median pruner judges every trial after the first four, confirmations included,
    # unless the runner leaves them alone; no early stopping, so every trial trains in full.
    config = load_config(replay_config(
        tmp_path, early_stopping={}, n_trials=4, confirm={"top_k": 2, "seeds": 2},
        pruner={"type": "median", "n_startup_trials": 4, "n_warmup_steps": 0}))
    study = create_study(config, "confirmed", 4)
    # Two configurations that align and learn, among the four.
    study.enqueue_trial({"learning_rate": 0.0025, "guided_attention_weight": 2.0,
                         "p_decoder_dropout": 0.05, "lr_schedule": "constant"})
    study.enqueue_trial({"learning_rate": 0.003, "guided_attention_weight": 4.0,
                         "p_decoder_dropout": 0.1, "lr_schedule": "cosine"})
    run_worker(config, study, poll_s=0.05)
    trials = study.get_trials()
    regular = [t for t in trials if CONFIRMS_ATTR not in t.user_attrs]
    confirming = [t for t in trials if CONFIRMS_ATTR in t.user_attrs]
    top = sorted((t for t in regular if t.state is TrialState.COMPLETE), key=lambda t: t.value)
    assert len(regular) == 4 and len(confirming) == 4
    assert sorted({t.user_attrs[CONFIRMS_ATTR] for t in confirming}) == sorted(
        t.number for t in top[:2])
    for trial in confirming:
        origin = trials[trial.user_attrs[CONFIRMS_ATTR]]
        assert trial.params == origin.params
        assert trial.user_attrs[TRAINING_SEED_ATTR] in (1235, 1236)
        # Trained in full: the pruner leaves a confirmation alone.
        assert trial.state is TrialState.COMPLETE and len(trial.intermediate_values) == 24
    # Each confirmation plays other recorded seeds than its trial did.
    groups = confirmation_groups(trials)
    assert all(len(set(group.values)) == 3 for group in groups)
    best = best_trial(study)
    champion = min(groups, key=lambda group: group.mean)
    assert best["number"] == champion.trial
    assert best["confirmation"]["seeds"] == 3
    assert best["confirmation"]["mean"] == pytest.approx(champion.mean)


def test_a_replayed_trial_is_not_judged_as_a_listener(tmp_path, monkeypatch):
    # A replay's checkpoints are files, but hold no model: evaluating them would only
    # start a process per completed trial that fails.
    launched = []
    monkeypatch.setattr(BackgroundRenders, "launch",
                        lambda self, number, kept, program, *args, **kwargs:
                        launched.append(program))
    config = load_config(replay_config(tmp_path, n_trials=3))
    assert config.evaluation.enabled
    study = create_study(config, "replayed", 3)
    run_worker(config, study, poll_s=0.05)
    assert any(t.state is TrialState.COMPLETE for t in study.get_trials())
    assert launched == []


def test_a_replayed_trial_draws_nothing(tmp_path):
    path = replay_config(tmp_path)
    settings = yaml.safe_load(path.read_text())
    settings["trainer"]["hparams"]["artifacts"] = "end"
    path.write_text(yaml.safe_dump(settings))
    with pytest.raises(ConfigError, match=r"trainer.replay: .*set trainer.hparams.artifacts"):
        load_config(path)


def test_the_pruner_may_compare_another_loss_than_the_objective(tmp_path, table):
    class Validations(TrialListener):
        """(train_loss, objective) of each validation the runner judged, by trial."""

        def __init__(self):
            self.heard: dict[int, list[tuple[float, float]]] = {}

        def trainer_event(self, trial, event, objective):
            if event["event"] == "validation":
                self.heard.setdefault(trial.number, []).append((event["train_loss"], objective))

    config = load_config(replay_config(tmp_path, early_stopping={}, n_trials=2,
                                       pruner={"type": "median", "metric": "train_loss"}))
    study = create_study(config, "on-train-loss", 2)
    validations = Validations()
    run_worker(config, study, validations, poll_s=0.05)
    for trial in study.get_trials():
        heard = validations.heard[trial.number]
        assert list(trial.intermediate_values.values()) == [loss for loss, _ in heard]
        # The trial's value is still the objective's best.
        assert trial.value == min(objective for _, objective in heard)
    assert study.user_attrs["config"]["reported_metric"] == "train_loss"


def test_the_pruner_compares_a_loss_only_when_the_study_minimises(tmp_path):
    path = replay_config(tmp_path, objective_metric="alignment_score", direction="maximize",
                         pruner={"type": "median", "metric": "train_loss"})
    with pytest.raises(ConfigError, match=r"optimization.pruner: .*train_loss is a loss"):
        load_config(path)
