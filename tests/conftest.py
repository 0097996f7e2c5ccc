"""Shared fixtures: a small generated corpus and a tiny, fast Tacotron2 profile."""

import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import torch

from tests.postgres import PostgresCluster, available, postgres_cluster
from train.corpus import generate_corpus
from train.tacotron2.hparams import PROFILES
from tuner_core.config import Config, load_config
from tuner_core.study import create_study, run_worker

# `make test` runs two test processes at once on two cores; a torch at every core in each
# (and in every trainer they start) would oversubscribe them: two tiny trainings side by side
# took 12.5 s each at two threads and 7.4 s at one.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

# The tiny profile, trimmed further so a test epoch takes about a second on one core.
TEST_HPARAMS = {
    **PROFILES["tiny"],
    "symbols_embedding_dim": 32, "encoder_embedding_dim": 32, "attention_rnn_dim": 64,
    "decoder_rnn_dim": 64, "prenet_dim": 32, "attention_dim": 32, "postnet_embedding_dim": 32,
    "encoder_n_convolutions": 2, "postnet_n_convolutions": 3,
    "batch_size": 8, "val_fraction": 0.2, "epochs": 3, "artifacts": "none",
    "griffin_lim_iters": 8, "max_decoder_steps": 60,
}


def hparams_arg(**changes: object) -> str:
    """TEST_HPARAMS with ``changes``, as a ``--hparams`` string."""
    return ",".join(f"{k}={v}" for k, v in {**TEST_HPARAMS, **changes}.items())


_databases = itertools.count()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-clip LJSpeech-format corpus, generated once per test session."""
    return generate_corpus(tmp_path_factory.mktemp("corpus"), n=20, seed=0)


@pytest.fixture(scope="session")
def mel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mel_cache")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that need PostgreSQL, so ``-m postgres`` selects them."""
    for item in items:
        if "postgres" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster (see tests/postgres.py): the one CI started around
    the test run, or else one for this session; skipped without PostgreSQL binaries."""
    cluster = PostgresCluster.from_environment()
    if cluster is not None:
        yield cluster
        return
    if not available():
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres: PostgresCluster, request: pytest.FixtureRequest) -> str:
    """A new empty database for this test, so its studies meet no others."""
    return postgres.create_database(f"t{next(_databases)}_{request.node.name[:40]}".lower())


@dataclass
class TrackedStudy:
    """A finished study, tracked in MLflow (see the ``tracked_study`` fixture)."""

    config_path: Path
    config: Config
    study: optuna.Study


@pytest.fixture(scope="session")
def tracked_study(corpus: Path, mel_cache: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> TrackedStudy:
    """A real 5-trial study of 2 epochs with MLflow and the registry, one trial per fate.

    Trial 0 completes first (version 1); 1 completes worse (keep_top_k is 1, so its
    checkpoints go); 2 completes best (version 2, with plots and audio samples); 3 learns
    too slowly and is pruned; 4 asks for a sampling rate the corpus lacks and fails.
    """
    from tests.test_tuner import write_config

    tmp_path = tmp_path_factory.mktemp("tracked")
    path = write_config(
        tmp_path, corpus, mel_cache, trainer={"hparams": {**TEST_HPARAMS, "epochs": 2}},
        hyperparameter_search_space={
            "learning_rate": {"type": "float", "min": 1e-4, "max": 5e-3, "log": True},
            "sampling_rate": {"type": "categorical", "choices": [16000, 22050]},
            "artifacts": {"type": "categorical", "choices": ["none", "validation"]}},
        optimization={"n_trials": 5, "pruner": {"type": "median", "n_startup_trials": 2,
                                                 "n_warmup_steps": 0}},
        mlflow={"enabled": True}, registry={"keep_top_k": 1})
    config = load_config(path)
    study = create_study(config, "tracked", 5)
    for params in ({"learning_rate": 1e-3, "artifacts": "none"},
                   {"learning_rate": 1e-4, "artifacts": "none"},
                   {"learning_rate": 5e-3, "artifacts": "validation"},
                   {"learning_rate": 1e-4, "artifacts": "none"},
                   {"sampling_rate": 16000}):
        study.enqueue_trial({"sampling_rate": 22050, **params})
    run_worker(config, study, poll_s=0.2)
    return TrackedStudy(path, config, study)


# --- The bot's tests: a tuner on a synthetic two-parameter config, and a bot over it -------
# (imported when used: the bot's modules load aiogram, which the other tests never need)

@pytest.fixture
def tuner(tmp_path: Path):
    """A SmartTuner on ``tests.bot_support.write_config``'s config in ``tmp_path``."""
    from tests.bot_support import write_config
    from tuner_core import SmartTuner

    return SmartTuner(write_config(tmp_path), environ={})


@pytest.fixture
def harness(tuner):
    """The bot's dispatcher over ``tuner`` (see ``tests.bot_support.BotHarness``)."""
    from tests.bot_support import BotHarness

    return BotHarness(tuner)


@pytest.fixture
def restore_logging():
    """train's main() sets up the root logger; put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level
