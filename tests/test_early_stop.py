"""The early-stopping criteria and controller, on synthetic validation histories."""

import math
from collections.abc import Sequence
from typing import Literal

import pytest
import yaml
from pydantic import ValidationError

from tuner_core.config import load_config
from tuner_core.rules.early_stop import (
    CRITERIA,
    Action,
    Alignment,
    Criterion,
    Decision,
    Direction,
    Divergence,
    EarlyStopController,
    EpochMetrics,
    Finding,
    Overfitting,
    Patience,
    Plateau,
)


def epoch(n: int, val_loss: float, train_loss: float | None = None,
          objective: float | None = None, **extra: float) -> EpochMetrics:
    """Validation ``n``; train_loss defaults to val_loss (no gap), objective to val_loss."""
    return EpochMetrics(epoch=n, step=10 * n, val_loss=val_loss,
                        train_loss=val_loss if train_loss is None else train_loss,
                        objective=val_loss if objective is None else objective, **extra)


def losses(*values: float) -> list[EpochMetrics]:
    return [epoch(n, value) for n, value in enumerate(values, start=1)]


def first_decision(criteria: dict[str, Criterion], history: Sequence[EpochMetrics],
                   direction: Direction = "minimize") -> Decision | None:
    """Feed ``history`` to a controller; the first decision that is not CONTINUE."""
    controller = EarlyStopController(criteria, direction)
    for metrics in history:
        decision = controller.observe(metrics)
        if decision.action is not Action.CONTINUE:
            return decision
    return None


# --- patience ---------------------------------------------------------------------------

def test_patience_fires_exactly_patience_epochs_after_the_best():
    history = losses(1.0, 0.7, 0.512, 0.6, 0.55, 0.53, 0.52, 0.9)
    decision = first_decision({"wait": Patience(patience=4)}, history)
    assert decision is not None
    assert (decision.action, decision.criterion, decision.epoch) == (Action.STOP, "wait", 7)
    assert "for 4 epochs" in decision.reason and "best 0.512 at epoch 3" in decision.reason
    assert decision.recommendation
    assert first_decision({"wait": Patience(patience=4)}, history[:6]) is None


def test_patience_ignores_improvements_smaller_than_min_delta():
    history = losses(1.0, 0.9, 0.899, 0.898, 0.897)
    decision = first_decision({"wait": Patience(patience=3, min_delta=0.01)}, history)
    assert decision is not None and decision.epoch == 5
    assert "improved by more than 0.01 for 3 epochs (best 0.9 at epoch 2)" in decision.reason
    assert first_decision({"wait": Patience(patience=3)}, history) is None


def test_patience_on_a_maximized_objective():
    scores = [0.2, 0.5, 0.4, 0.45, 0.3]
    history = [epoch(n, 1.0, objective=s) for n, s in enumerate(scores, start=1)]
    decision = first_decision({"wait": Patience(patience=3)}, history, "maximize")
    assert decision is not None and decision.epoch == 5 and "best 0.5 at epoch 2" in decision.reason
    # Read as a loss, the same numbers would have their best at epoch 1 (0.2) and stop earlier.
    assert first_decision({"wait": Patience(patience=3)}, history, "minimize").epoch == 4


def test_patience_on_a_higher_is_better_metric_whatever_the_direction():
    history = [epoch(n, 1.0, alignment_score=a) for n, a in enumerate([0.1, 0.4, 0.3, 0.35], 1)]
    decision = first_decision({"p": Patience(metric="alignment_score", patience=2)}, history)
    assert decision is not None and decision.epoch == 4 and "best 0.4" in decision.reason


def test_patience_skips_nan_values():
    history = losses(1.0, 0.8, math.nan, math.nan)
    assert first_decision({"p": Patience(patience=3)}, history) is None


# --- overfitting ------------------------------------------------------------------------

def test_overfitting_needs_consecutive_validations_over_the_threshold_after_warmup():
    criterion = Overfitting(overfitting_threshold=0.2, warmup_epochs=2, consecutive=2)
    history = [epoch(1, 1.5, train_loss=1.0),   # 50 % gap, but in warm-up
               epoch(2, 1.5, train_loss=1.0),   # still warm-up
               epoch(3, 1.3, train_loss=1.0),   # 30 %: one
               epoch(4, 1.1, train_loss=1.0),   # 10 %: the run is broken
               epoch(5, 1.25, train_loss=1.0),  # 25 %: one
               epoch(6, 1.2, train_loss=0.8)]   # 50 %: two in a row
    decision = first_decision({"gap": criterion}, history)
    assert decision is not None
    assert (decision.action, decision.epoch) == (Action.ADAPT, 6)
    assert "50% above train_loss (threshold 20%)" in decision.reason
    assert "train 0.8" in decision.reason and "val 1.2" in decision.reason
    assert first_decision({"gap": criterion}, history[:5]) is None


def test_overfitting_gap_is_relative_to_train_loss():
    criterion = Overfitting(overfitting_threshold=0.2, warmup_epochs=0, consecutive=1)
    assert criterion.check([epoch(1, 0.11, train_loss=0.1)], "minimize") is None      # 10 %
    assert criterion.check([epoch(1, 2.3, train_loss=2.0)], "minimize") is None       # 15 %
    assert criterion.check([epoch(1, 0.13, train_loss=0.1)], "minimize") is not None  # 30 %


# --- divergence -------------------------------------------------------------------------

def test_nan_loss_is_divergence_at_once_even_in_warmup():
    event = {"event": "validation", "epoch": 1, "step": 5, "train_loss": None,
             "val_loss": 2.0, "lr": 1e-3}
    metrics = EpochMetrics.from_event(event, objective=2.0)
    assert math.isnan(metrics.train_loss)
    decision = first_decision({"nan": Divergence(warmup_epochs=5)}, [metrics])
    assert decision is not None
    assert (decision.action, decision.epoch) == (Action.PRUNE, 1)
    assert decision.reason == "train_loss is nan at epoch 1"


def test_divergence_when_val_loss_exceeds_factor_times_its_best():
    criterion = {"blowup": Divergence(factor=3.0, warmup_epochs=1)}
    assert first_decision(criterion, losses(1.0, 0.8, 2.3, 2.39)) is None
    decision = first_decision(criterion, losses(1.0, 0.8, 2.3, 2.5))
    assert decision is not None and decision.epoch == 4
    assert "val_loss 2.5 at epoch 4 is above 3× its best 0.8 (epoch 2)" in decision.reason


def test_divergence_waits_for_warmup_before_comparing_with_the_best():
    criterion = {"blowup": Divergence(factor=2.0, warmup_epochs=3)}
    assert first_decision(criterion, losses(0.5, 5.0, 5.0)) is None
    assert first_decision(criterion, losses(0.5, 5.0, 5.0, 5.0)).epoch == 4


def test_divergence_of_a_maximized_objective_is_a_fall():
    scores = [0.6, 0.9, 0.31, 0.29]
    history = [epoch(n, 1.0, objective=s) for n, s in enumerate(scores, start=1)]
    decision = first_decision({"d": Divergence(metric="objective", factor=3.0)}, history,
                              "maximize")
    assert decision is not None and decision.epoch == 4
    assert "below 1/3 of its best 0.9" in decision.reason


def test_an_absurd_loss_is_divergence_at_once_even_when_it_falls():
    # An exploded trial (learning_rate 50): finite, falling, and never "factor × its best".
    criterion = {"blowup": Divergence(warmup_epochs=3)}
    decision = first_decision(criterion, [epoch(1, 2.7e7, train_loss=4.1e7), epoch(2, 7.5e5)])
    assert decision is not None and (decision.action, decision.epoch) == (Action.PRUNE, 1)
    assert decision.reason == "train_loss 4.1e+07 at epoch 1 is above max_loss 1000"
    history = [*losses(5.0, 4.0), epoch(3, 17016.0, train_loss=3.0)]
    decision = first_decision({"blowup": Divergence(factor=100.0, max_growth=1e4)}, history)
    assert decision is not None and decision.epoch == 3
    assert "val_loss 1.702e+04 at epoch 3 is above max_loss 1000" in decision.reason


def test_a_loss_blown_up_from_its_first_epoch_is_divergence_even_in_warmup():
    criterion = {"blowup": Divergence(factor=3.0, warmup_epochs=5, max_growth=10.0)}
    assert first_decision(criterion, losses(5.0, 40.0, 49.0)) is None
    decision = first_decision(criterion, losses(5.0, 40.0, 51.0))
    assert decision is not None and decision.epoch == 3
    assert decision.reason == "train_loss 51 at epoch 3 is above 10× its first value 5 (epoch 1)"


def test_a_diverged_trial_is_always_pruned_never_completed():
    assert Divergence(action="prune").action is Action.PRUNE
    for action in ("stop", "adapt"):
        with pytest.raises(ValidationError, match="action"):
            Divergence(action=action)


# --- plateau ----------------------------------------------------------------------------

def test_plateau_compares_the_best_before_and_after_the_window():
    criterion = {"flat": Plateau(window=3, min_improvement=0.05)}
    # at epoch 4: best 1.0 before the window (epochs 2-4), 0.92 now: 8 %, no plateau
    assert first_decision(criterion, losses(1.0, 0.95, 0.93, 0.92)) is None
    # at epoch 5: best 0.95 before the window (epochs 3-5), 0.92 now: only 3.16 %
    decision = first_decision(criterion, losses(1.0, 0.95, 0.93, 0.92, 0.925))
    assert decision is not None and (decision.action, decision.epoch) == (Action.STOP, 5)
    assert "improved by only 3.16% over the last 3 epochs" in decision.reason
    assert "0.95 -> 0.92" in decision.reason


def test_plateau_on_a_maximized_objective():
    scores = [0.5, 0.6, 0.7, 0.71, 0.72]
    history = [epoch(n, 1.0, objective=s) for n, s in enumerate(scores, start=1)]
    criterion = {"flat": Plateau(window=2, min_improvement=0.05)}
    decision = first_decision(criterion, history, "maximize")
    assert decision is not None and decision.epoch == 5  # 0.7 -> 0.72 is under 5 %
    assert first_decision(criterion, history[:4], "maximize") is None


# --- alignment --------------------------------------------------------------------------

def test_alignment_fires_from_by_epoch_on():
    scores = [0.05, 0.1, 0.2, 0.25]
    history = [epoch(n, 1.0, alignment_score=s) for n, s in enumerate(scores, start=1)]
    decision = first_decision({"attn": Alignment(min_score=0.3, by_epoch=3)}, history)
    assert decision is not None and (decision.action, decision.epoch) == (Action.PRUNE, 3)
    assert "alignment_score 0.200 is below 0.3 at epoch 3" in decision.reason
    assert first_decision({"attn": Alignment(min_score=0.15, by_epoch=3)}, history) is None


def test_alignment_ignores_validations_without_a_score():
    assert first_decision({"attn": Alignment(by_epoch=1)}, losses(1.0, 0.9)) is None


# --- the controller ---------------------------------------------------------------------

def test_controller_continues_with_an_empty_decision_and_keeps_the_history():
    controller = EarlyStopController({"wait": Patience(patience=5)})
    decision = controller.observe(epoch(1, 1.0))
    assert decision == Decision(action=Action.CONTINUE, epoch=1)
    controller.observe(epoch(2, 0.9))
    assert [m.epoch for m in controller.history] == [1, 2]


def test_disabled_criterion_is_ignored():
    history = losses(1.0, 1.0, 1.0, 1.0)
    assert first_decision({"wait": Patience(patience=2, enabled=False)}, history) is None


def test_criteria_are_asked_in_config_order():
    history = losses(1.0, 1.0, 1.0, 1.0)
    patience, plateau = Patience(patience=3), Plateau(window=3, action=Action.PRUNE)
    assert first_decision({"a": patience, "b": plateau}, history).criterion == "a"
    decision = first_decision({"b": plateau, "a": patience}, history)
    assert (decision.criterion, decision.action) == ("b", Action.PRUNE)


def test_after_adaptation_the_new_attempt_gets_a_fresh_warmup():
    criterion = Overfitting(overfitting_threshold=0.2, warmup_epochs=1, consecutive=2)
    controller = EarlyStopController({"gap": criterion})
    overfit = [epoch(n, 1.5, train_loss=1.0) for n in range(1, 6)]
    actions = [controller.observe(metrics).action for metrics in overfit[:3]]
    assert actions == [Action.CONTINUE, Action.CONTINUE, Action.ADAPT]

    controller.reset_after_adaptation()  # the runner restarts from the epoch-2 checkpoint
    restarted = [epoch(n, 1.5, train_loss=1.0) for n in (3, 4, 5)]
    actions = [controller.observe(metrics).action for metrics in restarted]
    assert actions == [Action.CONTINUE, Action.CONTINUE, Action.ADAPT]
    assert [m.epoch for m in controller.attempt] == [3, 4, 5]
    assert len(controller.history) == 6


def test_continue_is_not_a_criterion_action():
    with pytest.raises(ValidationError, match="enabled: false"):
        Patience(action="continue")


def test_epoch_metrics_from_event_keeps_absent_fields_as_none():
    event = {"event": "validation", "epoch": 3, "step": 30, "train_loss": 0.5,
             "val_loss": 0.6, "grad_norm": None, "alignment_score": 0.4}
    metrics = EpochMetrics.from_event(event, objective=0.61)
    assert (metrics.epoch, metrics.objective, metrics.alignment_score) == (3, 0.61, 0.4)
    assert math.isnan(metrics.grad_norm) and metrics.stop_rate is None
    with pytest.raises(ValueError, match="val_loss"):
        EpochMetrics.from_event({"epoch": 1, "step": 1, "train_loss": 1.0}, objective=1.0)


# --- adding a criterion -----------------------------------------------------------------

def test_a_new_criterion_class_is_all_it_takes(tmp_path):
    class GateFloor(Criterion):
        """Prune when too few free-running decodes stop by the gate."""

        type: Literal["gate_floor"] = "gate_floor"
        action: Action = Action.PRUNE
        min_rate: float = 0.5

        def check(self, history, direction):
            rate = history[-1].value("stop_rate")
            if rate is not None and rate < self.min_rate:
                return Finding(f"stop_rate {rate} < {self.min_rate}", "check the data")
            return None

    try:
        assert CRITERIA["gate_floor"] is GateFloor
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({"dataset_path": "data", "early_stopping": {
            "gate": {"type": "gate_floor", "min_rate": 0.8}}}))
        criteria = load_config(path, environ={}).early_stopping
        assert criteria == {"gate": GateFloor(min_rate=0.8)}

        history = [epoch(1, 1.0, stop_rate=0.9), epoch(2, 1.0, stop_rate=0.7)]
        decision = first_decision(criteria, history)
        assert (decision.criterion, decision.action, decision.epoch) == ("gate", Action.PRUNE, 2)
    finally:
        CRITERIA.pop("gate_floor", None)


def test_two_criteria_cannot_share_a_type():
    with pytest.raises(TypeError, match="'patience' is already defined by Patience"):
        class MyPatience(Criterion):
            type: Literal["patience"] = "patience"
            action: Action = Action.STOP

            def check(self, history, direction):
                return None
