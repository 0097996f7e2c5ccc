"""The model registry over a real tiny study: versions, promotion, export, retention, use."""

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pytorch
import optuna
import pytest
import soundfile
import torch
import yaml
from mlflow.entities import LoggedModelStatus

from tests.conftest import TrackedStudy
from tests.deadlines import scaled
from train.synthesize import load_model
from train.tacotron2.model import Tacotron2
from tuner_core import SmartTuner
from tuner_core.__main__ import main
from tuner_core.errors import RegistryError
from tuner_core.storage import TRIAL_RUN_ATTR
from tuner_core.tracking.registering import BestCheckpoint, register_version
from tuner_core.tracking.registry import (
    export,
    list_versions,
    load_model_uri,
    load_registered_model,
    promote,
    resolve,
)
from tuner_core.tracking.store import mlflow_client

ROOT = Path(__file__).resolve().parents[1]


def run_dir(tracked_study: TrackedStudy, number: int) -> Path:
    return Path(tracked_study.study.trials[number].user_attrs["run_dir"])


def test_each_new_best_trial_is_registered_as_a_version(tracked_study):
    study = tracked_study.study
    versions = list_versions(tracked_study.config)
    # Trial 0 was the first to complete, trial 2 beat it; trial 1 was worse than trial 0.
    assert [(v["version"], v["trial"]) for v in versions] == [("2", 2), ("1", 0)]
    for info in versions:
        trial = study.trials[info["trial"]]
        assert trial.user_attrs["registered_version"] == info["version"]
        assert info["study"] == "tracked" and info["run_id"] == trial.user_attrs["mlflow_run_id"]
        assert info["value"] == trial.value
        assert info["params"]["sampling_rate"] == trial.params["sampling_rate"]
        assert info["params"]["learning_rate"] == trial.params["learning_rate"]
        assert info["objective_metric"] == "val_loss"
        # The metrics are those of the validation that saved the best checkpoint.
        val_loss = {point.step: point.value for point in mlflow_client(
            tracked_study.config).get_metric_history(info["run_id"], "val_loss")}
        assert info["metrics"]["val_loss"] == val_loss[info["epoch"]]
        assert info["metrics"]["val_loss"] == min(val_loss.values())
    assert "registered_version" not in study.trials[1].user_attrs
    assert SmartTuner(tracked_study.config_path).best_version("tracked") == "2"


def test_a_versions_metrics_are_linked_to_its_model_and_its_tags_say_where_from(
        tracked_study):
    client = mlflow_client(tracked_study.config)
    version = client.get_model_version("test", "2")
    trial = tracked_study.study.trials[2]
    # Tags for what is neither a metric nor a param (issue 22, item 17: 26 tags before).
    assert version.tags == {"study": "tracked", "trial": "2", "objective_metric": "val_loss",
                            "hparams_digest": version.tags["hparams_digest"]}
    experiment = client.get_experiment_by_name("test").experiment_id
    (model,) = [model for model in client.search_logged_models([experiment])
                if model.artifact_location == version.source]
    assert model.params["learning_rate"] == "0.005"
    linked = {point.key: point for point in model.metrics}
    assert linked["best_objective"].value == trial.value
    assert linked["val_loss"].step == 2 and linked["val_loss"].run_id == version.run_id
    assert "epoch" not in linked and "step" not in linked
    # The same points as the run's: linking them to the model added none to the run.
    run_points = client.get_metric_history(version.run_id, "val_loss")
    assert [point.step for point in run_points] == [1, 2]
    assert (run_points[-1].value, run_points[-1].timestamp) == (
        linked["val_loss"].value, linked["val_loss"].timestamp)
    assert len(client.get_metric_history(version.run_id, "best_objective")) == 1


def test_registered_versions_are_mlflow_models(tracked_study, monkeypatch):
    config = tracked_study.config
    client = mlflow_client(config)
    experiment = client.get_experiment_by_name("test")
    models = client.search_logged_models([experiment.experiment_id])
    trials = tracked_study.study.trials
    assert sorted(model.source_run_id for model in models) == sorted(
        trials[number].user_attrs["mlflow_run_id"] for number in (0, 2))
    assert {model.status for model in models} == {LoggedModelStatus.READY}
    by_run = {model.source_run_id: model for model in models}
    assert json.loads(by_run[trials[2].user_attrs["mlflow_run_id"]].tags[
        "mlflow.modelVersions"]) == [{"name": "test", "version": "2"}]
    promote(config, "2")
    # MLflow's own loader, through MLflow's own settings.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", config.tracking_uri)
    model = mlflow.pytorch.load_model("models:/test@champion")
    assert isinstance(model, Tacotron2)
    trained, _ = load_model(run_dir(tracked_study, 2) / "best.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  trained.state_dict().values(), strict=True))


def test_a_rerun_with_the_same_hyperparameters_registers_no_duplicate(tracked_study):
    config = tracked_study.config
    registered = tracked_study.study.trials[2]
    folder = mlflow_client(config).get_model_version_download_uri("test", "2")
    hparams = json.loads(mlflow.artifacts.load_text(f"{folder}/hparams.json"))
    # The same trial again, in a new study (as a re-run of the same seed makes it).
    rerun = optuna.create_study(study_name="rerun").ask()
    rerun.set_user_attr(TRIAL_RUN_ATTR, registered.user_attrs[TRIAL_RUN_ATTR])
    best = BestCheckpoint(run_dir(tracked_study, 2) / "best.pt", hparams, {"val_loss": 0.5})
    assert register_version(config, rerun, registered.value, best) == "2"
    assert rerun.study.trials[0].user_attrs["registered_version"] == "2"
    assert [v["version"] for v in list_versions(config)] == ["2", "1"]


def test_retention_keeps_the_top_k_and_every_registered_trial(tracked_study):
    # keep_top_k is 1: trial 2 is the best; trial 0 is registered; the others lose theirs.
    # A kept trial keeps all its checkpoints, the resume fallback last.prev.pt included.
    kept = sorted(p.name for p in run_dir(tracked_study, 2).glob("*.pt"))
    assert kept == ["best.pt", "last.prev.pt", "last.pt"]
    assert (run_dir(tracked_study, 0) / "best.pt").is_file()
    for number in (1, 3):
        assert not list(run_dir(tracked_study, number).glob("*.pt"))
        assert (run_dir(tracked_study, number) / "train.log").is_file()


def test_promotion_moves_the_champion_alias_and_keeps_the_previous(tracked_study, capsys):
    config = tracked_study.config
    client = mlflow_client(config)
    for alias in ("champion", "previous"):  # as before any promotion
        client.delete_registered_model_alias("test", alias)
    assert main(["promote", "1", "--config", str(tracked_study.config_path)]) == 0
    assert capsys.readouterr().out == "version 1 is the champion\n"
    assert resolve(config, "champion")["version"] == "1"
    second = promote(config, 2)
    assert second["aliases"] == ["champion"] and second["replaced"] == "1"
    assert not second["already"]
    assert resolve(config, "previous")["version"] == "1"
    again = promote(config, "champion")
    assert again["version"] == "2" and again["replaced"] is None and again["already"]
    assert resolve(config, "best")["version"] == "2"  # trial 2 beat trial 0
    assert [v["aliases"] for v in list_versions(config)] == [["champion"], ["previous"]]
    with pytest.raises(RegistryError, match=r"no version or alias '7'.*2 \(champion\), "
                                            r"1 \(previous\)"):
        promote(config, "7")


def test_export_writes_a_self_contained_folder(tracked_study, tmp_path):
    config = tracked_study.config
    promote(config, "2")
    out = export(config, "champion", tmp_path / "champion")
    assert filecmp.cmp(out / "best.pt", run_dir(tracked_study, 2) / "best.pt", shallow=False)
    assert json.loads((out / "hparams.json").read_text())["learning_rate"] == 5e-3
    exported_config = yaml.safe_load((out / "config.yaml").read_text())
    assert exported_config["registry"]["keep_top_k"] == 1
    # Trial 2 logged samples at each validation: the export takes the latest.
    assert filecmp.cmp(out / "sample_e0002.wav",
                       run_dir(tracked_study, 2) / "artifacts" / "sample_e0002.wav")
    card = (out / "MODEL_CARD.md").read_text()
    assert "version 2 (champion)" in card and "trial 2 of study `tracked`" in card
    assert "| learning_rate | 0.005 |" in card and "sample_e0002.wav" in card
    # Trial 0 ran without artifacts: its sample is spoken by the checkpoint at export.
    out = export(config, "1", tmp_path / "first")
    wav, rate = soundfile.read(out / "sample.wav")
    assert rate == 22050 and len(wav) > 0
    assert "sample.wav" in (out / "MODEL_CARD.md").read_text()


def test_models_and_export_say_their_own_lines_only(tracked_study, tmp_path):
    """MLflow's download progress bars and INFO records stay off the console of the
    commands that read the registry (issue 22, item 14)."""
    for command in (["models"], ["export", "2", "--out", str(tmp_path / "out")]):
        done = subprocess.run(
            [sys.executable, "-m", "tuner_core", *command, "--config",
             str(tracked_study.config_path)], cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
            timeout=scaled(120))
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Downloading artifacts" not in done.stderr, done.stderr[-2000:]
        chatter = [line for line in done.stderr.splitlines()
                   if " INFO " in line and (" mlflow" in line or " alembic" in line)]
        assert not chatter, done.stderr[-2000:]


def test_the_champion_checkpoint_is_used_through_its_models_uri(tracked_study, tmp_path):
    config = tracked_study.config
    promote(config, "2")
    checkpoint = load_model_uri("models:/test@champion", config.tracking_uri, tmp_path)
    assert filecmp.cmp(checkpoint, run_dir(tracked_study, 2) / "best.pt", shallow=False)
    model, hp = load_registered_model("models:/test@champion", config.tracking_uri)
    assert not model.training and hp.n_frames_per_step == 3
    with pytest.raises(RegistryError, match="no version or alias 'staging'"):
        load_model_uri("models:/test@staging", config.tracking_uri)
    with pytest.raises(RegistryError, match="expected models:/<name>@<alias>"):
        load_model_uri("models:/test", config.tracking_uri)

    wav = tmp_path / "hello.wav"
    done = subprocess.run(
        [sys.executable, "-m", "train.synthesize", "--checkpoint", "models:/test@champion",
         "--tracking-uri", config.tracking_uri, "--text", "Hello.", "--out", str(wav)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=scaled(120))
    assert done.returncode == 0, done.stderr[-2000:]
    assert soundfile.info(wav).samplerate == 22050 and soundfile.info(wav).frames > 0
    assert not (tmp_path / "mlflow.db").exists()  # MLflow's default store was left alone


def test_the_facade_finds_the_best_trials_audio_sample(tracked_study):
    tuner = SmartTuner(tracked_study.config_path)
    assert tuner.audio_sample("tracked") == (run_dir(tracked_study, 2) / "artifacts"
                                             / "sample_e0002.wav")
    assert tuner.audio_sample("tracked", trial_number=0) is None  # artifacts=none
    assert [v["version"] for v in tuner.models()] == ["2", "1"]
    with pytest.raises(LookupError, match="no trial 9"):
        tuner.audio_sample("tracked", trial_number=9)


def test_a_registered_versions_checkpoint_is_loaded_without_running_its_code(
        tracked_study, tmp_path):
    """What the README states: the project's own loaders read a version's best.pt with the
    weights-only loader, so a version whose checkpoint was tampered with is refused."""
    from tests.test_checkpoint_safety import Payload
    from train.tacotron2.checkpoint import CheckpointError

    config = tracked_study.config
    client = mlflow_client(config)
    stored = Path(client.get_model_version_download_uri("test", "1")) / "best.pt"
    original = stored.read_bytes()
    marker = tmp_path / "payload_ran"
    try:
        torch.save({"model": Payload(marker)}, stored)
        with pytest.raises(CheckpointError, match="refused"):
            load_registered_model("models:/test/1", config.tracking_uri)
        assert not marker.exists()
    finally:
        stored.write_bytes(original)
