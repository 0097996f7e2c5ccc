"""Warm start (NVIDIA's --warm_start): weights only, from this project's or NVIDIA's checkpoints."""

from pathlib import Path

import pytest
import torch
import yaml
from optuna.trial import TrialState

from tests.conftest import TEST_HPARAMS, hparams_arg
from tests.test_trainer import of_kind, run_train
from tests.test_tuner import write_config
from train.__main__ import parse_args
from train.tacotron2.checkpoint import CheckpointError, load_checkpoint
from train.tacotron2.hparams import HParams
from train.tacotron2.model import Tacotron2
from train.tacotron2.trainer import Trainer
from train.tacotron2.warm_start import nvidia_name, project_name, warm_start_model
from tuner_core.config import ConfigError, load_config
from tuner_core.study import create_study, run_worker

# Small layers, but NVIDIA's numbers of convolutions, so every name of its model occurs.
SMALL = {
    "symbols_embedding_dim": 16, "encoder_embedding_dim": 16, "attention_rnn_dim": 16,
    "decoder_rnn_dim": 16, "prenet_dim": 8, "attention_dim": 8,
    "attention_location_n_filters": 4, "postnet_embedding_dim": 8, "n_mel_channels": 10,
}
_CONV = ("weight", "bias")
_BATCH_NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_LSTM_CELL = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
# The state_dict keys of NVIDIA/tacotron2's model.py at its default numbers of layers.
NVIDIA_KEYS = {
    "embedding.weight",
    *(f"encoder.convolutions.{i}.0.conv.{p}" for i in range(3) for p in _CONV),
    *(f"encoder.convolutions.{i}.1.{p}" for i in range(3) for p in _BATCH_NORM),
    *(f"encoder.lstm.{p}_l0{d}" for p in _LSTM_CELL for d in ("", "_reverse")),
    *(f"decoder.prenet.layers.{i}.linear_layer.weight" for i in range(2)),
    *(f"decoder.attention_rnn.{p}" for p in _LSTM_CELL),
    "decoder.attention_layer.query_layer.linear_layer.weight",
    "decoder.attention_layer.memory_layer.linear_layer.weight",
    "decoder.attention_layer.v.linear_layer.weight",
    "decoder.attention_layer.location_layer.location_conv.conv.weight",
    "decoder.attention_layer.location_layer.location_dense.linear_layer.weight",
    *(f"decoder.decoder_rnn.{p}" for p in _LSTM_CELL),
    *(f"decoder.linear_projection.linear_layer.{p}" for p in _CONV),
    *(f"decoder.gate_layer.linear_layer.{p}" for p in _CONV),
    *(f"postnet.convolutions.{i}.0.conv.{p}" for i in range(5) for p in _CONV),
    *(f"postnet.convolutions.{i}.1.{p}" for i in range(5) for p in _BATCH_NORM),
}


def model(seed: int, sizes: dict = SMALL, **overrides: object) -> Tacotron2:
    torch.manual_seed(seed)
    return Tacotron2(HParams.from_overrides({**sizes, **overrides}))


def save_nvidia_checkpoint(source: Tacotron2, path: Path) -> Path:
    """``source``'s weights as NVIDIA's train.py saves them, in NVIDIA's names."""
    state_dict = {nvidia_name(name): value for name, value in source.state_dict().items()}
    torch.save({"state_dict": state_dict, "iteration": 0, "optimizer": {},
                "learning_rate": 1e-3}, path)
    return path


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_every_parameter_maps_one_to_one_to_nvidias_name() -> None:
    names = list(model(0).state_dict())
    assert {nvidia_name(name) for name in names} == NVIDIA_KEYS
    assert [project_name(nvidia_name(name)) for name in names] == names
    assert project_name("decoder.gate_layer.weight") == "decoder.gate_layer.weight"


def test_warm_start_from_an_nvidia_checkpoint_loads_every_weight(tmp_path: Path) -> None:
    source, target = model(1), model(2)
    loaded = warm_start_model(target, save_nvidia_checkpoint(source, tmp_path / "nvidia.pt"))
    assert set(loaded) == set(source.state_dict())
    for name, value in source.state_dict().items():
        assert_same(target.state_dict()[name], value)


def test_ignored_layers_keep_their_fresh_initialisation(tmp_path: Path) -> None:
    source, target = model(1), model(2)
    fresh = {name: value.clone() for name, value in target.state_dict().items()}
    path = save_nvidia_checkpoint(source, tmp_path / "nvidia.pt")
    # One name in this project's spelling, one in NVIDIA's.
    warm_start_model(target, path, ["embedding.weight", "decoder.gate_layer.linear_layer.bias"])
    kept = {"embedding.weight", "decoder.gate_layer.bias"}
    for name, value in target.state_dict().items():
        assert_same(value, fresh[name] if name in kept else source.state_dict()[name])


def test_a_size_mismatch_names_the_parameter_and_both_shapes(tmp_path: Path) -> None:
    # NVIDIA's 148 symbols into a model of this project's 39: the usual fine-tuning case.
    path = save_nvidia_checkpoint(model(1, symbol_set="nvidia"), tmp_path / "nvidia.pt")
    with pytest.raises(CheckpointError, match=r"embedding\.weight: checkpoint \(148, 16\), "
                                              r"model \(39, 16\)"):
        warm_start_model(model(2), path)
    target = model(2)
    fresh = target.embedding.weight.clone()
    warm_start_model(target, path, ["embedding.weight"])
    assert_same(target.embedding.weight, fresh)


def test_unknown_names_and_foreign_files_are_errors(tmp_path: Path) -> None:
    path = save_nvidia_checkpoint(model(1), tmp_path / "nvidia.pt")
    with pytest.raises(CheckpointError, match=r"embeding\.weight: the model has no"):
        warm_start_model(model(2), path, ["embeding.weight"])
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="neither a Smart Tuner checkpoint"):
        warm_start_model(model(2), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not found"):
        warm_start_model(model(2), tmp_path / "missing.pt")


def test_ignore_layers_needs_warm_start_on_the_command_line() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--data", "d", "--out", "o", "--ignore-layers", "embedding.weight"])
    args = parse_args(["--data", "d", "--out", "o", "--warm-start", "w.pt",
                       "--ignore-layers", "embedding.weight, decoder.gate_layer.bias"])
    assert args.ignore_layers == ["embedding.weight", "decoder.gate_layer.bias"]


@pytest.fixture(scope="module")
def warm_run(corpus, mel_cache, tmp_path_factory):
    """``python -m train --warm-start`` from an NVIDIA checkpoint, one epoch at lr 0."""
    folder = tmp_path_factory.mktemp("warm")
    source = model(1, TEST_HPARAMS)
    path = save_nvidia_checkpoint(source, folder / "nvidia.pt")
    events, proc = run_train(corpus, folder / "run", mel_cache, "--hparams",
                             hparams_arg(epochs=1, learning_rate=0.0), "--warm-start", str(path),
                             "--ignore-layers", "embedding.weight")
    return folder / "run", events, proc, source


def test_the_trainer_starts_from_the_weights_only(warm_run) -> None:
    run_dir, events, proc, source = warm_run
    assert "warm-started from" in proc.stderr and "embedding.weight" in proc.stderr
    assert of_kind(events, "start")[0]["step"] == 0  # no step, optimiser or schedule taken
    trained = load_checkpoint(run_dir / "best.pt")["model"]
    # At learning rate 0 the parameters are still the checkpoint's, except the ignored one.
    for name, value in source.named_parameters():
        if name == "embedding.weight":
            assert not torch.equal(trained[name], value)
        else:
            assert_same(trained[name], value.detach())


def test_warm_start_from_this_projects_checkpoint(warm_run) -> None:
    run_dir, *_ = warm_run
    target = Tacotron2(HParams.from_dict(load_checkpoint(run_dir / "best.pt")["hparams"]))
    warm_start_model(target, run_dir / "best.pt")
    for name, value in load_checkpoint(run_dir / "best.pt")["model"].items():
        assert_same(target.state_dict()[name], value)


def test_a_resume_wins_and_adams_eps_is_nvidias(corpus, mel_cache, tmp_path) -> None:
    hp = HParams.from_overrides(hparams_arg())
    # The warm-start file is not even read when resuming (and does not exist here).
    trainer = Trainer(hp, corpus, tmp_path, cache_dir=mel_cache, resume=tmp_path / "last.pt",
                      warm_start=tmp_path / "missing.pt")
    assert trainer.optimizer.param_groups[0]["eps"] == 1e-8  # PyTorch's, as NVIDIA's train.py


def test_config_ignore_layers_needs_warm_start(corpus, mel_cache, tmp_path) -> None:
    path = write_config(tmp_path, corpus, mel_cache,
                        trainer={"ignore_layers": ["embedding.weight"]})
    with pytest.raises(ConfigError, match=r"trainer\.ignore_layers: needs trainer\.warm_start"):
        load_config(path)


def test_every_trial_warm_starts_from_the_configured_checkpoint(corpus, mel_cache,
                                                                 tmp_path) -> None:
    source = model(1, TEST_HPARAMS)
    checkpoint = save_nvidia_checkpoint(source, tmp_path / "nvidia.pt")
    path = write_config(tmp_path, corpus, mel_cache, optimization={"n_trials": 1},
                        trainer={"hparams": {**TEST_HPARAMS, "epochs": 1},
                                 "warm_start": str(checkpoint),
                                 "ignore_layers": ["decoder.gate_layer.bias"]})
    config = load_config(path)
    assert yaml.safe_load(path.read_text())["trainer"]["warm_start"] == str(checkpoint)
    study = create_study(config, "warm", 1)
    run_worker(config, study, poll_s=0.2)
    (trial,) = study.trials
    assert trial.state is TrialState.COMPLETE
    log = (Path(trial.user_attrs["run_dir"]) / "train.log").read_text()
    assert f"warm-started from {checkpoint}" in log and "decoder.gate_layer.bias" in log
