"""Trials judged as a listener would: ``train.evaluate --json``, the evaluation of each
completed trial (stored, tracked, shown), listened objectives and the registry's
requirements. Real tiny studies on the generated corpus, with the recogniser off (its CER
is tested in tests/test_evaluate.py and tests/test_intelligibility.py) and Griffin-Lim."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import yaml

from bot.messages import best_text
from bot.service import BotError, TunerService
from tests.conftest import TEST_HPARAMS
from tests.test_tracking import drawn_epochs
from tests.test_tuner import write_config
from train.corpus import HARD_SENTENCES, HELD_OUT
from train.evaluate import main as evaluate
from train.tacotron2.checkpoint import save_checkpoint
from train.tacotron2.events import parse
from train.tacotron2.hparams import HParams
from train.tacotron2.model import Tacotron2
from tuner_core import SmartTuner
from tuner_core.__main__ import main as cli
from tuner_core.config import load_config
from tuner_core.errors import ConfigError, RequirementsUnmet
from tuner_core.reporting.events import Kind, collect
from tuner_core.reporting.report import render_markdown
from tuner_core.rules.requirements import Requirement, parse_requirements, unmet
from tuner_core.storage import VERSION_ATTR
from tuner_core.study import create_study, run_worker
from tuner_core.tracking.registry import list_versions, model_card, promote
from tuner_core.tracking.store import mlflow_client

LISTENED = {"enabled": True, "recognizer": "off", "vocoder": "griffin_lim"}
JUDGED = HELD_OUT + len(HARD_SENTENCES)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hp = HParams.from_overrides({**TEST_HPARAMS, "vocoder": "griffin_lim"})
    return save_checkpoint(tmp_path_factory.mktemp("listening") / "best.pt", {
        "model": Tacotron2(hp).state_dict(), "hparams": hp.to_dict(), "epoch": 1, "step": 1,
        "optimizer": {}, "scheduler": {}})


def test_evaluate_writes_its_summary_as_json_and_says_so_in_an_event(corpus, checkpoint,
                                                                       tmp_path, capsys):
    out = tmp_path / "listening.json"
    assert evaluate(["--checkpoint", str(checkpoint), "--held-out", str(corpus),
                     "--recognizer", "off", "--json", str(out)]) == 0
    events = [event for event in map(parse, capsys.readouterr().out.splitlines()) if event]
    assert [(e["event"], e["kind"], e["path"]) for e in events] == [
        ("artifact", "listening", str(out))]
    summary = json.loads(out.read_text())
    assert summary["sentences"] == JUDGED and summary["hard"] == len(HARD_SENTENCES)
    assert summary["stop_rate"] == summary["stopped"] / JUDGED
    assert summary["cer"] is summary["cer_ratio"] is None  # the recogniser was off
    assert summary["mcd"] > 0 and summary["length_ratio"] > 0
    for fault in ("skipped", "repeated"):
        assert summary[fault] == len(summary[f"{fault}_words"]) <= JUDGED
    assert summary["judged_on"] == "held-out and hard sentences"
    assert summary["vocoder"] == "griffin_lim"


def test_a_corpus_without_held_out_sentences_is_judged_on_its_validation_split(
        corpus, checkpoint, tmp_path, capsys):
    users = tmp_path / "LJSpeech"
    shutil.copytree(corpus / "wavs", users / "wavs")
    shutil.copyfile(corpus / "metadata.csv", users / "metadata.csv")
    out = tmp_path / "listening.json"
    assert evaluate(["--checkpoint", str(checkpoint), "--held-out", str(users),
                     "--recognizer", "off", "--sentences", "2", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["sentences"] == 2 and summary["hard"] == 0
    assert summary["judged_on"].startswith("validation utterances DEMO-")
    assert "has no heldout.csv: judging validation utterances DEMO-" in capsys.readouterr().out


def test_requirements_are_parsed_and_checked():
    assert parse_requirements({"stop_rate": ">= 0.9", "skipped": 0, "cer_ratio": "<1.5"}) == [
        Requirement("stop_rate", ">=", 0.9), Requirement("skipped", "==", 0.0),
        Requirement("cer_ratio", "<", 1.5)]
    requirements = parse_requirements({"stop_rate": ">= 0.9", "cer_ratio": "<= 1.5",
                                       "skipped": "== 0"})
    assert unmet(requirements, {"stop_rate": 0.5, "cer_ratio": None, "skipped": 0}) == [
        "stop_rate >= 0.9 (was 0.5)", "cer_ratio <= 1.5 (not measured)"]
    assert unmet(requirements, None)[0] == "stop_rate >= 0.9 (not evaluated)"
    assert unmet(requirements, {"stop_rate": 1.0, "cer_ratio": 1.2, "skipped": 0}) == []


def test_a_bad_requirement_or_a_listened_objective_without_its_measure_is_named(
        corpus, mel_cache, tmp_path):
    path = write_config(tmp_path, corpus, mel_cache,
                        registry={"requirements": {"stop_rat": ">= 0.9", "mcd": "=< 8",
                                                   "cer_ratio": "<= 1.5"}},
                        optimization={"objective_metric": "cer"}, evaluation=LISTENED)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    problems = "\n".join(error.value.problems)
    assert "registry.requirements.stop_rat: unknown key; did you mean stop_rate?" in problems
    assert "registry.requirements.mcd: '=< 8' is not a requirement" in problems
    assert "optimization.objective_metric (cer) needs the recogniser" in problems
    (tmp_path / "cer").mkdir()
    path = write_config(tmp_path / "cer", corpus, mel_cache, evaluation=LISTENED,
                        registry={"requirements": {"cer_ratio": "<= 1.5"}})
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert error.value.problems == [
        "evaluation.recognizer: registry.requirements.cer_ratio (cer_ratio) needs the "
        "recogniser; use en-us or a model folder"]


def run_study(tmp_path: Path, corpus: Path, mel_cache: Path, **sections) -> SmartTuner:
    sections = {"trainer": {"hparams": {**TEST_HPARAMS, "epochs": 2}},
                "optimization": {"n_trials": 1}, "evaluation": LISTENED,
                "mlflow": {"enabled": True}, **sections}
    path = write_config(tmp_path, corpus, mel_cache, **sections)
    config = load_config(path)
    run_worker(config, create_study(config, "listened", 1), poll_s=0.2)
    return SmartTuner(path, environ={})


def test_each_completed_trial_is_judged_beside_the_next_and_shown_everywhere(
        corpus, mel_cache, tmp_path, capsys):
    tuner = run_study(tmp_path, corpus, mel_cache)
    trial = tuner.study("listened").trials[0]
    listening = trial.user_attrs["listening"]  # written onto the finished trial
    assert listening["sentences"] == JUDGED and listening["mcd"] > 0
    assert "requirements_unmet" not in trial.user_attrs  # none set: nothing waited
    client = mlflow_client(tuner.config)
    metrics = client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
    assert metrics["listen_mcd"] == pytest.approx(listening["mcd"])
    assert metrics["listen_stop_rate"] == pytest.approx(listening["stop_rate"])
    assert tuner.trials("listened")[0]["mcd"] == listening["mcd"]
    assert tuner.best("listened")["listening"] == listening
    version = list_versions(tuner.config)[0]  # linked to the version when it arrived
    assert version["listening"]["mcd"] == pytest.approx(listening["mcd"])
    card = model_card(tuner.config, version, "sample.wav")
    assert "## Listening" in card and "| mcd |" in card
    report = render_markdown(tuner.study("listened"), {})
    assert "## Listening" in report and f"MCD {listening['mcd']:.1f} dB" in report

    config_path = tmp_path / "config.yaml"
    assert cli(["trials", "--study", "listened", "--config", str(config_path)]) == 0
    assert "cer_ratio  mcd" in capsys.readouterr().out
    assert cli(["best", "--study", "listened", "--config", str(config_path)]) == 0
    assert f"listening: gate stopped {listening['stopped']}/{JUDGED}" in capsys.readouterr().out

    # Requirements set afterwards: the version that fails them is not promoted silently.
    settings = yaml.safe_load(config_path.read_text())
    settings["registry"] = {"requirements": {"mcd": "<= 0.001", "skipped": ">= 0"}}
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump(settings))
    with pytest.raises(RequirementsUnmet) as refusal:
        promote(load_config(strict), "1")
    assert refusal.value.failed == [f"mcd <= 0.001 (was {listening['mcd']:.3g})"]
    assert cli(["promote", "1", "--config", str(strict)]) == 2
    assert "version 1 fails the registry's requirements: mcd <= 0.001" in (
        capsys.readouterr().err)
    with pytest.raises(BotError) as bot_refusal:
        asyncio.run(TunerService(SmartTuner(strict, environ={})).promote(1))
    assert str(bot_refusal.value).startswith(
        "Version 1 is not promoted: it fails the registry's requirements (mcd &lt;= 0.001")
    assert cli(["promote", "1", "--force", "--config", str(strict)]) == 0
    assert "version 1 is the champion" in capsys.readouterr().out
    best = asyncio.run(TunerService(tuner).best())
    assert f"👂 As a listener hears it: gate stopped {listening['stopped']}/{JUDGED}" in (
        best_text(best, None))


def test_a_listened_study_draws_each_trial_once_at_its_end(corpus, mel_cache, tmp_path):
    # A trial's MCD is measured once it has ended: while it trains, its validation loss
    # cannot say whether it beats the study's best MCD.
    path = write_config(tmp_path, corpus, mel_cache, evaluation=LISTENED,
                        trainer={"hparams": {**TEST_HPARAMS, "epochs": 3, "artifacts": "end"}},
                        optimization={"objective_metric": "mcd"})
    config = load_config(path)
    study = create_study(config, "listened", 2)
    study.enqueue_trial({"learning_rate": 1e-4})
    study.enqueue_trial({"learning_rate": 5e-3})  # its validation loss soon beats the first's
    run_worker(config, study, poll_s=0.2)
    assert [drawn_epochs(trial) for trial in study.trials] == [{3}, {3}]


def test_a_listened_objective_is_the_trials_value_and_a_failing_best_is_not_registered(
        corpus, mel_cache, tmp_path):
    from bot.messages import notification_text

    tuner = run_study(tmp_path, corpus, mel_cache,
                      optimization={"n_trials": 1, "objective_metric": "mcd"},
                      registry={"requirements": {"mcd": "<= 0.001", "repeated": "<= 9"}})
    trial = tuner.study("listened").trials[0]
    listening = trial.user_attrs["listening"]  # evaluated before the trial was recorded
    assert trial.value == pytest.approx(listening["mcd"])
    assert trial.user_attrs["requirements_unmet"] == [
        f"mcd <= 0.001 (was {listening['mcd']:.3g})"]
    assert VERSION_ATTR not in trial.user_attrs and list_versions(tuner.config) == []
    best = next(n for n in collect(tuner.storage(), set()) if n.kind is Kind.OPTIMIZATION_UPDATES)
    assert "Not registered as a model version: it fails mcd &lt;= 0.001" in (
        notification_text(best))
