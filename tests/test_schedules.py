import math

import pytest
import torch

from train.tacotron2.hparams import HParams, HParamsError
from train.tacotron2.schedules import SCHEDULES, LearningRateScheduler, lr_multiplier


def lrs(hp: HParams, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=hp.learning_rate)
    scheduler = LearningRateScheduler(optimizer, hp, total_steps=steps)
    seen = []
    for _ in range(steps):
        seen.append(scheduler.lr)
        optimizer.step()
        scheduler.step()
    return seen


def test_every_schedule_warms_up_then_decays_to_the_floor():
    for name in SCHEDULES:
        hp = HParams.from_overrides(f"lr_schedule={name},warmup_steps=10,lr_min_ratio=0.1")
        seen = lrs(hp, 110)
        assert seen[0] == pytest.approx(1e-3 / 11)
        assert seen[:11] == sorted(seen[:11]), name
        assert seen[10] == pytest.approx(1e-3), name
        after = seen[10:]
        assert after == sorted(after, reverse=True), name
        expected_end = 1e-3 if name == "constant" else 1e-4
        assert lr_multiplier(hp, 110, 110) * 1e-3 == pytest.approx(expected_end), name


def test_cosine_midpoint_and_explicit_horizon():
    hp = HParams.from_overrides("lr_schedule=cosine,lr_decay_steps=100,lr_min_ratio=0")
    assert lr_multiplier(hp, 50, total_steps=10_000) == pytest.approx(0.5)
    assert lr_multiplier(hp, 500, total_steps=10_000) == pytest.approx(0.0)
    exponential = HParams.from_overrides("lr_schedule=exponential,lr_decay_steps=100,"
                                         "lr_min_ratio=0.01")
    assert lr_multiplier(exponential, 50, 10_000) == pytest.approx(0.1)


def test_plateau_cuts_compose_with_the_schedule_and_survive_a_reload():
    hp = HParams.from_overrides("lr_schedule=linear,lr_min_ratio=0.5,plateau_patience=2,"
                                "plateau_factor=0.5")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=hp.learning_rate)
    scheduler = LearningRateScheduler(optimizer, hp, total_steps=100)
    for val_loss in (1.0, 1.0, 1.0):  # no improvement for two validations -> one cut
        scheduler.on_validation(val_loss)
    assert scheduler.lr == pytest.approx(5e-4)
    for _ in range(50):
        optimizer.step()
        scheduler.step()
    assert scheduler.lr == pytest.approx(5e-4 * 0.75)  # the cut persists through the shape

    fresh = LearningRateScheduler(torch.optim.SGD([param], lr=hp.learning_rate), hp, 100)
    fresh.load_state_dict(scheduler.state_dict())
    fresh.step()
    assert fresh.shape.base_lrs == scheduler.shape.base_lrs
    assert math.isclose(fresh.lr, 5e-4 * (1 - 0.5 * 51 / 100))


def test_hparams_accept_exactly_the_schedules_that_are_implemented():
    for name, shape in SCHEDULES.items():
        assert HParams.from_overrides(f"lr_schedule={name}").lr_schedule == name
        assert shape(0.0, 0.1) == pytest.approx(1.0), name  # every shape starts at 1
    with pytest.raises(HParamsError, match=f"must be one of {', '.join(SCHEDULES)}$"):
        HParams.from_overrides("lr_schedule=step")
