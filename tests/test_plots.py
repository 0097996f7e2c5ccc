"""The study's pictures, drawn from synthetic in-memory studies."""

import io
import random
from pathlib import Path

import numpy as np
import optuna
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from tuner_core import plots

optuna.logging.set_verbosity(optuna.logging.WARNING)

DISTRIBUTIONS = {"learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
                 "batch_size": CategoricalDistribution([8, 16, 32])}
STATES = {"completed": TrialState.COMPLETE, "early_stopped": TrialState.COMPLETE,
          "pruned": TrialState.PRUNED, "stopped_by_user": TrialState.PRUNED,
          "failed": TrialState.FAIL}


def add_trial(study: optuna.Study, outcome: str, curve: list[float],
              params: dict | None = None, **user_attrs) -> None:
    """A finished trial whose objective followed ``curve``, one value per validation."""
    state = STATES[outcome]
    best = (max if study.direction.name == "MAXIMIZE" else min)(curve) if curve else None
    study.add_trial(optuna.trial.create_trial(
        state=state, value=best if state is TrialState.COMPLETE else None,
        params=params or {"learning_rate": 1e-3, "batch_size": 16},
        distributions=DISTRIBUTIONS,
        intermediate_values=dict(enumerate(curve, start=1)),
        user_attrs={"outcome": outcome, **user_attrs}))


def new_study(direction: str = "minimize") -> optuna.Study:
    study = optuna.create_study(study_name="unit", direction=direction)
    study.set_user_attr("config", {"objective_metric": "val_loss"})
    return study


def decoded(png: bytes) -> np.ndarray:
    """The image's RGB pixels, after checking it is a PNG of the promised size."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(io.BytesIO(png))
    assert pixels.shape[:2] == (500, 800)
    return pixels[..., :3]


def best_highlight_pixels(png: bytes) -> int:
    """How many pixels have the colour the best trial is drawn in."""
    distance = np.abs(decoded(png) - np.array(to_rgb(plots.BEST_COLOR))).max(axis=-1)
    return int((distance < 0.05).sum())


def test_a_study_of_fifty_trials_of_every_outcome():
    study = new_study()
    rng = random.Random(0)
    for _ in range(50):
        outcome = rng.choice(list(STATES))
        start = rng.uniform(1.0, 2.0)
        curve = [start * 0.9 ** k for k in range(rng.randint(2, 20))]
        add_trial(study, outcome, curve, {"learning_rate": 10 ** rng.uniform(-4, -2),
                                          "batch_size": rng.choice([8, 16, 32])})
    assert best_highlight_pixels(plots.learning_curves_png(study)) > 200
    assert best_highlight_pixels(plots.optimization_history_png(study)) > 200


def test_an_empty_study_still_gives_pictures_but_no_importances():
    study = new_study()
    assert best_highlight_pixels(plots.learning_curves_png(study)) == 0
    assert best_highlight_pixels(plots.optimization_history_png(study)) == 0
    assert plots.param_importances_png(study) is None


def test_one_trial():
    study = new_study()
    add_trial(study, "completed", [1.0, 0.8, 0.7])
    assert best_highlight_pixels(plots.learning_curves_png(study)) > 200
    decoded(plots.optimization_history_png(study))
    assert plots.param_importances_png(study) is None


def test_all_pruned_has_curves_but_no_best():
    study = new_study()
    for start in (1.0, 1.5, 2.0):
        add_trial(study, "pruned", [start, start * 0.9])
    assert best_highlight_pixels(plots.learning_curves_png(study)) == 0
    assert best_highlight_pixels(plots.optimization_history_png(study)) == 0
    assert plots.param_importances_png(study) is None


def test_maximize_direction():
    study = new_study("maximize")
    for k, lr in enumerate((1e-3, 2e-3, 4e-3)):
        add_trial(study, "completed", [0.2, 0.4 + 0.1 * k], {"learning_rate": lr,
                                                             "batch_size": 16})
    assert study.best_trial.number == 2
    assert best_highlight_pixels(plots.learning_curves_png(study)) > 200
    assert best_highlight_pixels(plots.optimization_history_png(study)) > 200
    decoded(plots.param_importances_png(study))


@pytest.mark.parametrize("values, learning_rates", [
    ([0.5, 0.6, 0.7], [1e-3, 1e-3, 1e-3]),  # no parameter varied
    ([0.5, 0.5, 0.5], [1e-3, 2e-3, 4e-3]),  # nothing to explain
])
def test_no_importances_without_variation(values, learning_rates):
    study = new_study()
    for value, lr in zip(values, learning_rates, strict=True):
        add_trial(study, "completed", [value], {"learning_rate": lr, "batch_size": 16})
    assert plots.param_importances_png(study) is None


def test_alignment_is_redrawn_from_the_latest_saved_matrix(tmp_path: Path):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    steps, tokens = 40, 12
    diagonal = np.zeros((steps, tokens))
    diagonal[np.arange(steps), np.arange(steps) * tokens // steps] = 1.0
    np.save(artifacts / "alignment_e0002.npy", np.full((steps, tokens), 1 / tokens))
    np.save(artifacts / "alignment_e0010.npy", diagonal)
    trial = optuna.trial.create_trial(value=0.1, user_attrs={"run_dir": str(tmp_path)})

    assert plots.latest_alignment(trial) == (10, artifacts / "alignment_e0010.npy")
    pixels = decoded(plots.alignment_png(trial, "unit"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # a drawn image, not blank


def test_no_alignment_without_a_saved_matrix(tmp_path: Path):
    assert plots.alignment_png(optuna.trial.create_trial(value=0.1)) is None
    trial = optuna.trial.create_trial(value=0.1, user_attrs={"run_dir": str(tmp_path)})
    assert plots.alignment_png(trial) is None
