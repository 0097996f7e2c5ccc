"""The study's pictures, drawn from synthetic in-memory studies."""

import io
import random
from pathlib import Path

import numpy as np
import optuna
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.image import imread
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from tuner_core.reporting import plots

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


def test_importances_need_enough_completed_trials():
    study = new_study()
    for k in range(plots.MIN_TRIALS_FOR_IMPORTANCES - 1):
        add_trial(study, "completed", [0.5 + 0.1 * k], {"learning_rate": 1e-3 * (k + 1),
                                                        "batch_size": 16})
    add_trial(study, "pruned", [2.0])
    assert plots.param_importances_png(study) is None
    assert plots.importances_unavailable(study) == (
        "9 trials completed; importances need at least 10, fewer are noise")
    add_trial(study, "completed", [0.4], {"learning_rate": 1e-4, "batch_size": 16})
    assert plots.importances_unavailable(study) is None
    decoded(plots.param_importances_png(study))


@pytest.mark.parametrize("values, learning_rates, reason", [
    ([0.5 + 0.1 * k for k in range(10)], [1e-3] * 10, "no searched parameter took more"),
    ([0.5] * 10, [1e-3 * (k + 1) for k in range(10)], "every completed trial has the same"),
])
def test_no_importances_without_variation(values, learning_rates, reason):
    study = new_study()
    for value, lr in zip(values, learning_rates, strict=True):
        add_trial(study, "completed", [value], {"learning_rate": lr, "batch_size": 16})
    assert plots.param_importances_png(study) is None
    assert plots.importances_unavailable(study).startswith(reason)


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plot functions return their matplotlib Figure instead of its PNG bytes."""
    monkeypatch.setattr(plots, "_png", lambda fig: fig)


def drawn(figure) -> None:
    """Lay out and draw ``figure`` as its PNG is drawn."""
    FigureCanvasAgg(figure).draw()


def visible_ticks(axis) -> list[float]:
    low, high = sorted(axis.get_view_interval())
    return [tick for tick in axis.get_majorticklocs() if low <= tick <= high]


def test_trial_and_validation_axes_count_in_whole_numbers(figures):
    study = new_study()
    add_trial(study, "completed", [1.0, 0.8])
    add_trial(study, "completed", [0.9, 0.7])
    for figure in (plots.learning_curves_png(study), plots.optimization_history_png(study)):
        drawn(figure)
        ticks = visible_ticks(figure.axes[0].xaxis)
        assert ticks and all(tick == int(tick) for tick in ticks), ticks


def test_pruned_curves_stand_out_and_end_where_they_were_cut(figures):
    study = new_study()
    add_trial(study, "completed", [1.0, 0.8, 0.6])
    add_trial(study, "pruned", [1.5, 1.4])
    figure = plots.learning_curves_png(study)
    (pruned,) = [line for line in figure.axes[0].get_lines()
                 if line.get_linestyle() == "--" and len(line.get_xdata()) == 2]
    assert pruned.get_alpha() >= 0.7 and pruned.get_marker() == "v"


def test_every_trial_is_named_at_the_end_of_its_curve_in_a_colour_of_its_own(figures):
    study = new_study()
    add_trial(study, "completed", [20.0, 7.0, 6.0, 5.5])
    add_trial(study, "pruned", [18.0, 7.5])
    add_trial(study, "pruned", [19.0, 7.52])  # cut beside trial 1
    add_trial(study, "early_stopped", [16.0, 6.8, 6.4])
    figure = plots.learning_curves_png(study)
    assert len(figure.axes) == 1  # no colour bar, which cannot name 4 trials
    labels = {text.get_text(): text for text in figure.axes[0].texts}
    assert set(labels) == {"0", "1", "2", "3"}
    assert labels["1"].xy == (2, 7.5) and labels["3"].xy == (3, 6.4)
    # Labels of curves cut at one point and one height stand side by side.
    assert labels["1"].xyann != labels["2"].xyann
    colours = [to_rgb(labels[number].get_color()) for number in "0123"]
    assert colours[0] == to_rgb(plots.BEST_COLOR) and len(set(colours)) == 4


def test_first_validations_do_not_squash_the_range_where_trials_differ(figures):
    study = new_study()
    add_trial(study, "completed", [21.0, 7.0, 6.0, 5.0])
    add_trial(study, "pruned", [15.0, 6.5, 6.2])
    ax = plots.learning_curves_png(study).axes[0]
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "log" and 4.5 < low < 5.0 and 7.0 < high < 7.6
    # A value at or below zero cannot be on a log scale: the axis stays linear.
    add_trial(study, "completed", [2.0, -0.5])
    assert plots.learning_curves_png(study).axes[0].get_yscale() == "linear"


def test_the_best_curve_lies_beneath_the_other_trials_curves_and_marks(figures):
    study = new_study()
    add_trial(study, "completed", [1.0, 0.8, 0.6])
    add_trial(study, "pruned", [1.1, 0.8])
    lines = plots.learning_curves_png(study).axes[0].get_lines()
    (best,) = [line for line in lines if to_rgb(line.get_color()) == to_rgb(plots.BEST_COLOR)]
    assert all(best.get_zorder() < line.get_zorder() for line in lines if line is not best)


def test_titles_fit_however_long_the_study_name(figures):
    study = optuna.create_study(study_name="tacotron2_smart_tuning-20250301-101500-" * 2)
    for k in range(plots.MIN_TRIALS_FOR_IMPORTANCES):
        add_trial(study, "completed", [0.5 + 0.1 * k], {"learning_rate": 1e-3 * (k + 1),
                                                        "batch_size": [8, 16][k % 2]})
    for figure in (plots.learning_curves_png(study), plots.optimization_history_png(study),
                   plots.param_importances_png(study)):
        drawn(figure)
        # Everything drawn, the titles among them, lies inside the figure.
        box = figure.get_tightbbox()
        width, height = figure.get_size_inches()
        assert box.x0 >= 0 and box.y0 >= 0, figure.get_suptitle()
        assert box.x1 <= width and box.y1 <= height, figure.get_suptitle()
        assert figure.get_suptitle() and figure.axes[0].get_title() == study.study_name


def test_mel_plot_shares_one_colour_scale_with_a_colour_bar():
    from train.tacotron2.figures import mels_figure

    target = np.linspace(-5.0, 1.0, 80 * 50).reshape(80, 50)
    figure = mels_figure(target, target + 3.0, "trial_0003, LJ001-0007: epoch 8, step 40")
    images = [image for ax in figure.axes for image in ax.get_images()]
    assert [image.get_clim() for image in images] == [(-5.0, 1.0)] * 2
    (colorbar_ax,) = [ax for ax in figure.axes if not ax.get_images()]
    assert colorbar_ax.get_ylabel() == "log magnitude"
    assert figure.get_suptitle() == "trial_0003, LJ001-0007: epoch 8, step 40"


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


def test_the_anytime_curve_steps_down_with_each_new_best():
    study = new_study()
    add_trial(study, "completed", [9.0, 7.0, 6.0])
    add_trial(study, "pruned", [9.5])
    add_trial(study, "completed", [8.0, 5.0, 4.0])
    assert best_highlight_pixels(plots.anytime_png(study)) > 200


def test_no_anytime_curve_without_a_completed_trial():
    study = new_study()
    add_trial(study, "pruned", [9.5])
    assert best_highlight_pixels(plots.anytime_png(study)) == 0
    assert best_highlight_pixels(plots.anytime_png(new_study())) == 0
