"""A confirmed champion in the model registry: once a study ends, the versions of its
confirmed configurations carry their mean, standard deviation and number of seeds, and
their model card says so (a real local MLflow registry; the study's trials are built)."""

from __future__ import annotations

import statistics
from pathlib import Path

import optuna
import pytest
import yaml

from tests.test_confirmation_views import add
from tuner_core.config import load_config
from tuner_core.storage import CONFIRMS_ATTR, TRAINING_SEED_ATTR
from tuner_core.storage.attributes import VERSION_ATTR
from tuner_core.tracking.registering import RegistryListener
from tuner_core.tracking.registry import list_versions, model_card
from tuner_core.tracking.store import mlflow_client


@pytest.fixture
def registry(tmp_path: Path):
    """A config with MLflow on in ``tmp_path``, and a registered model of three versions."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "experiment_name": "confirm", "dataset_path": str(tmp_path),
        "state_dir": str(tmp_path / "state"),
        "hyperparameter_search_space": {
            "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "log": True}},
        "mlflow": {"enabled": True}, "registry": {"model_name": "confirmed_model"}}))
    config = load_config(path)
    client = mlflow_client(config)
    client.create_registered_model("confirmed_model")
    for _ in range(3):
        client.create_model_version("confirmed_model", source=str(tmp_path))
    return config


def test_a_confirmed_versions_registry_entry_and_card_show_its_mean_over_seeds(registry):
    # As tests.test_confirmation_views.confirmed_study, each registered trial with its
    # version: trial 0 (the best single draw) is version 1, trial 1 (the best mean)
    # version 2, trial 2 (never confirmed) version 3.
    study = optuna.create_study(study_name="c")
    for value, lr, version in ((4.0, 1e-3, "1"), (4.2, 2e-3, "2"), (5.0, 3e-3, "3")):
        add(study, value, lr, **{VERSION_ATTR: version})
    for origin, lr, values in ((0, 1e-3, (5.0, 5.2)), (1, 2e-3, (4.3, 4.4))):
        for value in values:
            add(study, value, lr, **{CONFIRMS_ATTR: origin, TRAINING_SEED_ATTR: 1235})

    RegistryListener(registry).study_finished(study)

    versions = {info["version"]: info for info in list_versions(registry)}
    confirmed = versions["2"]["confirmation"]
    assert confirmed["seeds"] == 3
    assert confirmed["mean"] == pytest.approx(statistics.fmean([4.2, 4.3, 4.4]), abs=1e-3)
    assert confirmed["std"] == pytest.approx(statistics.stdev([4.2, 4.3, 4.4]), abs=1e-3)
    assert versions["1"]["confirmation"]["mean"] == pytest.approx(
        statistics.fmean([4.0, 5.0, 5.2]), abs=1e-3)
    assert versions["3"]["confirmation"] is None

    card = model_card(registry, versions["2"], "sample.wav")
    assert "over 3 training seeds: mean **4.3**" in card
    assert "from one training seed (not confirmed)" in model_card(registry, versions["3"],
                                                                  "sample.wav")
