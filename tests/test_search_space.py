"""Sampling and describing the search space, on a real in-memory Optuna study."""

import re

import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import ValidationError

from tuner_core.rules.search_space import Categorical, FloatRange, IntRange, describe, suggest

SPACE = {
    "learning_rate": FloatRange(type="float", min=1e-4, max=1e-2, log=True),
    "p_decoder_dropout": FloatRange(type="float", min=0.0, max=0.3, step=0.05),
    "warmup_steps": IntRange(type="int", min=0, max=4000, step=500),
    "batch_size": IntRange(type="int", min=8, max=64, log=True),
    "lr_schedule": Categorical(choices=["constant", "cosine", "noam"]),
}


@pytest.fixture(autouse=True)
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_suggest_samples_every_entry_within_its_range():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    samples = []
    for _ in range(40):
        trial = study.ask()
        samples.append(suggest(trial, SPACE))
        study.tell(trial, 0.0)

    for params in samples:
        assert set(params) == set(SPACE)
        assert 1e-4 <= params["learning_rate"] <= 1e-2
        dropout = params["p_decoder_dropout"]
        assert 0.0 <= dropout <= 0.3 and dropout == pytest.approx(round(dropout / 0.05) * 0.05)
        assert params["warmup_steps"] % 500 == 0 and 0 <= params["warmup_steps"] <= 4000
        assert isinstance(params["batch_size"], int) and 8 <= params["batch_size"] <= 64
        assert params["lr_schedule"] in {"constant", "cosine", "noam"}
    # A log scale puts about half the samples in the lowest decade of 1e-4 .. 1e-2.
    low = sum(params["learning_rate"] < 1e-3 for params in samples)
    assert 10 <= low <= 30
    assert len({params["lr_schedule"] for params in samples}) == 3


def test_suggest_records_the_distributions_with_log_and_step():
    study = optuna.create_study()
    trial = study.ask()
    suggest(trial, SPACE)
    assert trial.distributions == {
        "learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
        "p_decoder_dropout": FloatDistribution(0.0, 0.3, step=0.05),
        "warmup_steps": IntDistribution(0, 4000, step=500),
        "batch_size": IntDistribution(8, 64, log=True),
        "lr_schedule": CategoricalDistribution(["constant", "cosine", "noam"]),
    }


def test_describe_gives_one_line_per_entry():
    assert describe(SPACE) == [
        "learning_rate: 0.0001 … 0.01 (log)",
        "p_decoder_dropout: 0 … 0.3 (step 0.05)",
        "warmup_steps: 0 … 4000 (step 500)",
        "batch_size: 8 … 64 (log)",
        "lr_schedule: constant | cosine | noam",
    ]
    assert describe({"weight_decay": FloatRange(type="float", min=1e-7, max=1e-4, log=True)}) \
        == ["weight_decay: 1e-7 … 0.0001 (log)"]


@pytest.mark.parametrize(("entry", "message"), [
    ({"type": "float", "min": 0.5, "max": 0.1}, "min (0.5) is greater than max (0.1)"),
    ({"type": "float", "min": 0.0, "max": 1.0, "log": True}, "log scale needs min > 0, got 0"),
    ({"type": "float", "min": 0.1, "max": 1.0, "log": True, "step": 0.1}, "step cannot be"),
    ({"type": "int", "min": 1, "max": 64, "log": True, "step": 2}, "step must be 1"),
    ({"type": "int", "min": 0.5, "max": 4}, "valid integer"),
])
def test_ranges_reject_what_optuna_would_refuse(entry, message):
    model = FloatRange if entry["type"] == "float" else IntRange
    with pytest.raises(ValidationError, match=re.escape(message)):
        model.model_validate(entry)


def test_categorical_needs_a_choice():
    with pytest.raises(ValidationError, match="at least one choice"):
        Categorical(choices=[])
