"""Shared fixtures: a small generated corpus and a tiny, fast Tacotron2 profile."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import postgres
from train.corpus import generate_corpus
from train.hparams import PROFILES

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


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-clip LJSpeech-format corpus, generated once per test session."""
    return generate_corpus(tmp_path_factory.mktemp("corpus"), n=20, seed=0)


@pytest.fixture(scope="session")
def mel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mel_cache")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database (see tests/postgres.py)."""
    if not postgres.available():
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    with postgres.postgres_server() as url:
        yield url
