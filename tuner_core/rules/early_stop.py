"""Early stopping: rules that end or change a trial from its validation history.

The runner turns every ``validation`` event of the trainer into an :class:`EpochMetrics`
and hands it to an :class:`EarlyStopController`, which asks each enabled criterion in
config order and returns the first :class:`Decision` that is not *continue*.

A criterion is a pydantic model: its fields are its settings under ``early_stopping``
in the YAML config, and its ``type`` field names it there. Defining a subclass of
:class:`Criterion` with ``type: Literal["name"] = "name"``, a default ``action`` and a
``check`` method registers it in :data:`CRITERIA`, where config validation looks entries
up, so a new criterion is one class in this module (or in any module imported before
the config is loaded).

Conventions shared by all criteria:

* ``history`` is the current *attempt*: the validations since the trial started or
  since its last adaptation (see :meth:`EarlyStopController.reset_after_adaptation`).
* Counts named in epochs (``patience``, ``window``, ``warmup_epochs``) compare the
  ``epoch`` numbers of validations, so they mean epochs even when the trainer validates
  several times per epoch.
* A metric that is missing (``None``) or not finite (NaN, inf) is never an
  improvement and never a best value; a non-finite *loss* is divergence's business.
* ``objective`` follows the study direction; the other metrics have a fixed sense:
  losses and ``grad_norm`` are better lower, ``alignment_score``, its components and
  ``stop_rate`` higher.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Direction = Literal["minimize", "maximize"]

# The EpochMetrics fields a criterion may watch (epoch, step and lr are not quality).
Metric = Literal["objective", "val_loss", "train_loss", "val_mel_loss", "val_gate_loss",
                 "grad_norm", "alignment_score", "attention_focus", "attention_progress",
                 "attention_coverage", "stop_rate"]

HIGHER_IS_BETTER = frozenset({"alignment_score", "attention_focus", "attention_progress",
                              "attention_coverage", "stop_rate"})


class Action(StrEnum):
    """What the runner does with a trial after a validation."""

    CONTINUE = "continue"  # keep training
    STOP = "stop"          # end the trial; it completes with its best value so far
    PRUNE = "prune"        # end the trial as pruned (a weak or broken trial)
    ADAPT = "adapt"        # restart from the best checkpoint with corrected hparams


@dataclass(frozen=True)
class EpochMetrics:
    """The numbers of one ``validation`` event, plus the trial's objective value."""

    epoch: int
    step: int
    train_loss: float
    val_loss: float
    objective: float
    val_mel_loss: float | None = None
    val_gate_loss: float | None = None
    grad_norm: float | None = None
    lr: float | None = None
    alignment_score: float | None = None
    attention_focus: float | None = None
    attention_progress: float | None = None
    attention_coverage: float | None = None
    stop_rate: float | None = None  # share of free-running decodes that the gate ended

    @classmethod
    def from_event(cls, event: Mapping[str, Any], objective: float) -> EpochMetrics:
        """Build from a parsed ``validation`` event (see :mod:`train.tacotron2.events`).

        The trainer writes a non-finite number as ``null`` (JSON has no NaN), so a
        field that is present but null becomes NaN; a field that is absent stays None.
        """
        def number(key: str) -> float | None:
            if key not in event:
                return None
            return math.nan if event[key] is None else float(event[key])

        missing = [key for key in ("epoch", "step", "train_loss", "val_loss") if key not in event]
        if missing:
            raise ValueError(f"validation event lacks {', '.join(missing)}: {dict(event)}")
        return cls(epoch=int(event["epoch"]), step=int(event["step"]),
                   train_loss=number("train_loss"), val_loss=number("val_loss"),
                   objective=objective, val_mel_loss=number("val_mel_loss"),
                   val_gate_loss=number("val_gate_loss"), grad_norm=number("grad_norm"),
                   lr=number("lr"), alignment_score=number("alignment_score"),
                   attention_focus=number("attention_focus"),
                   attention_progress=number("attention_progress"),
                   attention_coverage=number("attention_coverage"),
                   stop_rate=number("stop_rate"))

    def value(self, metric: str) -> float | None:
        """The metric's value if it is a finite number, else None."""
        value = getattr(self, metric)
        return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class Finding:
    """Why a criterion fired, and what a person could change about it."""

    reason: str
    recommendation: str


@dataclass(frozen=True)
class Decision:
    """The controller's verdict on one validation."""

    action: Action
    epoch: int
    criterion: str = ""       # the early_stopping entry that fired; "" for CONTINUE
    reason: str = ""
    recommendation: str = ""


CRITERIA: dict[str, type[Criterion]] = {}
"""Every criterion class by its ``type``; filled as subclasses are defined."""


class Criterion(BaseModel):
    """Base of the early-stopping rules; a subclass's fields are its YAML settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    enabled: bool = True
    action: Action

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        name = cls.model_fields["type"].default
        if not isinstance(name, str):  # an intermediate base without its own type
            return
        if name in CRITERIA:
            raise TypeError(f"criterion type {name!r} is already defined by "
                            f"{CRITERIA[name].__qualname__}")
        CRITERIA[name] = cls

    @field_validator("action")
    @classmethod
    def _action_ends_or_changes_the_trial(cls, action: Action) -> Action:
        if action is Action.CONTINUE:
            raise ValueError("'continue' would make the criterion do nothing; "
                             "use enabled: false instead")
        return action

    @abstractmethod
    def check(self, history: Sequence[EpochMetrics], direction: Direction) -> Finding | None:
        """A finding if the rule fires on the latest validation of ``history``, else None."""


def higher_is_better(metric: str, direction: Direction) -> bool:
    """Whether larger values of ``metric`` are better in a study of ``direction``."""
    return direction == "maximize" if metric == "objective" else metric in HIGHER_IS_BETTER


def _best(history: Sequence[EpochMetrics], metric: str, maximize: bool,
          min_delta: float = 0.0) -> tuple[float, EpochMetrics] | None:
    """The best finite value of ``metric`` in ``history`` and its validation.

    A later value replaces the best only when it is better by more than ``min_delta``,
    so on ties (or near-ties) the earliest validation is the best.
    """
    best: tuple[float, EpochMetrics] | None = None
    for metrics in history:
        value = metrics.value(metric)
        if value is not None and (best is None or (value > best[0] + min_delta if maximize
                                                   else value < best[0] - min_delta)):
            best = (value, metrics)
    return best


def _after_warmup(history: Sequence[EpochMetrics], warmup_epochs: int) -> list[EpochMetrics]:
    """The validations of ``history`` after its first ``warmup_epochs`` epochs."""
    first_judged_epoch = history[0].epoch + warmup_epochs
    return [metrics for metrics in history if metrics.epoch >= first_judged_epoch]


class Patience(Criterion):
    """No improvement of ``metric`` by more than ``min_delta`` for ``patience`` epochs."""

    type: Literal["patience"] = "patience"
    action: Action = Action.STOP
    metric: Metric = "objective"
    patience: int = Field(10, ge=1)
    min_delta: float = Field(0.0, ge=0.0)

    def check(self, history: Sequence[EpochMetrics], direction: Direction) -> Finding | None:
        # Only an improvement by more than min_delta resets the count (as in Keras).
        best = _best(history, self.metric, higher_is_better(self.metric, direction),
                     self.min_delta)
        if best is None:
            return None
        best_value, best_metrics = best
        stale_epochs = history[-1].epoch - best_metrics.epoch
        if stale_epochs < self.patience:
            return None
        by = f" by more than {self.min_delta:g}" if self.min_delta else ""
        return Finding(
            reason=f"{self.metric} has not improved{by} for {stale_epochs} epochs "
                   f"(best {best_value:.4g} at epoch {best_metrics.epoch})",
            recommendation="training has converged at these settings; a lower learning rate "
                           "or a decaying lr_schedule may still help")


class Overfitting(Criterion):
    """Validation loss far above training loss for ``consecutive`` validations.

    The gap is relative, ``(val_loss - train_loss) / train_loss``, so one threshold
    suits both early epochs (large losses) and late ones (small losses).
    """

    type: Literal["overfitting"] = "overfitting"
    action: Action = Action.ADAPT
    overfitting_threshold: float = Field(0.2, gt=0.0)
    warmup_epochs: int = Field(3, ge=0)
    consecutive: int = Field(2, ge=1)

    def check(self, history: Sequence[EpochMetrics], direction: Direction) -> Finding | None:
        judged = _after_warmup(history, self.warmup_epochs)
        recent = judged[-self.consecutive:]
        if len(recent) < self.consecutive:
            return None
        gaps = [self._relative_gap(metrics) for metrics in recent]
        if not all(gap is not None and gap > self.overfitting_threshold for gap in gaps):
            return None
        latest = recent[-1]
        return Finding(
            reason=f"val_loss is {gaps[-1]:.0%} above train_loss (threshold "
                   f"{self.overfitting_threshold:.0%}) for {self.consecutive} consecutive "
                   f"validations (epoch {latest.epoch}: train {latest.train_loss:.4g}, "
                   f"val {latest.val_loss:.4g})",
            recommendation="the model is overfitting: raise p_attention_dropout, "
                           "p_decoder_dropout or weight_decay, lower the learning rate, "
                           "or add data")

    @staticmethod
    def _relative_gap(metrics: EpochMetrics) -> float | None:
        train, val = metrics.value("train_loss"), metrics.value("val_loss")
        if train is None or val is None or train <= 0:
            return None
        return (val - train) / train


class Divergence(Criterion):
    """A loss that is not finite, absurd or blown up, or ``metric`` far worse than its best.

    Fires at once, even during warm-up, when ``train_loss`` or ``val_loss`` is NaN or
    inf, above ``max_loss`` (no sane Tacotron2 loss comes near it, while an exploded one
    can stay finite for epochs and even fall), or more than ``max_growth`` times its value
    at the attempt's first epoch (losses start at their highest). After the warm-up it
    also fires when ``metric`` is more than ``factor`` times worse than its best: above
    ``factor × best`` for a lower-is-better metric, below ``best / factor`` for a
    higher-is-better one (the ratios assume positive values, as losses are).

    A diverged trial is always pruned, never completed: its values mean nothing, and a
    completed trial could become the best and be registered as a model.
    """

    type: Literal["divergence"] = "divergence"
    action: Literal[Action.PRUNE] = Action.PRUNE
    metric: Metric = "val_loss"
    factor: float = Field(3.0, gt=1.0)
    warmup_epochs: int = Field(1, ge=0)
    max_loss: float = Field(1000.0, gt=0.0)
    max_growth: float = Field(10.0, gt=1.0)

    LOSSES: ClassVar[tuple[str, str]] = ("train_loss", "val_loss")
    RECOMMENDATION: ClassVar[str] = ("the loss diverged: lower the learning rate, lower "
                                     "grad_clip_thresh, or lengthen warmup_steps")

    def check(self, history: Sequence[EpochMetrics], direction: Direction) -> Finding | None:
        reason = self._broken_loss(history) or self._far_from_best(history, direction)
        return None if reason is None else Finding(reason=reason,
                                                   recommendation=self.RECOMMENDATION)

    def _broken_loss(self, history: Sequence[EpochMetrics]) -> str | None:
        latest = history[-1]
        first_epoch = [metrics for metrics in history if metrics.epoch == history[0].epoch]
        for loss in self.LOSSES:
            value = latest.value(loss)
            if value is None:
                return f"{loss} is {getattr(latest, loss)} at epoch {latest.epoch}"
            where = f"{loss} {value:.4g} at epoch {latest.epoch}"
            if value > self.max_loss:
                return f"{where} is above max_loss {self.max_loss:g}"
            start = min((v for metrics in first_epoch if (v := metrics.value(loss)) is not None),
                        default=None)
            if start is not None and start > 0 and value > self.max_growth * start:
                return (f"{where} is above {self.max_growth:g}× its first value {start:.4g} "
                        f"(epoch {history[0].epoch})")
        return None

    def _far_from_best(self, history: Sequence[EpochMetrics], direction: Direction
                       ) -> str | None:
        latest = history[-1]
        value = latest.value(self.metric)
        if value is None or latest.epoch < history[0].epoch + self.warmup_epochs:
            return None
        maximize = higher_is_better(self.metric, direction)
        best = _best(history, self.metric, maximize)
        if best is None or best[0] <= 0:
            return None
        best_value, best_metrics = best
        if not (value < best_value / self.factor if maximize else value > best_value * self.factor):
            return None
        bound = f"below 1/{self.factor:g} of" if maximize else f"above {self.factor:g}×"
        return (f"{self.metric} {value:.4g} at epoch {latest.epoch} is {bound} its best "
                f"{best_value:.4g} (epoch {best_metrics.epoch})")


class Plateau(Criterion):
    """The best ``metric`` improved by less than ``min_improvement`` over the last ``window``.

    The improvement is relative: ``(best before the window - best now) / |best before|``
    for a lower-is-better metric (mirrored for higher-is-better).
    """

    type: Literal["plateau"] = "plateau"
    action: Action = Action.STOP
    metric: Metric = "objective"
    window: int = Field(5, ge=1)
    min_improvement: float = Field(0.01, ge=0.0)

    def check(self, history: Sequence[EpochMetrics], direction: Direction) -> Finding | None:
        window_start = history[-1].epoch - self.window + 1
        before = [metrics for metrics in history if metrics.epoch < window_start]
        maximize = higher_is_better(self.metric, direction)
        best_before, best_now = _best(before, self.metric, maximize), \
            _best(history, self.metric, maximize)
        if best_before is None or best_now is None:
            return None
        gain = best_now[0] - best_before[0] if maximize else best_before[0] - best_now[0]
        # Relative to the earlier best; absolute when that best is exactly 0.
        improvement = gain / (abs(best_before[0]) or 1.0)
        if improvement >= self.min_improvement:
            return None
        return Finding(
            reason=f"{self.metric} improved by only {improvement:.2%} over the last "
                   f"{self.window} epochs (best {best_before[0]:.4g} -> {best_now[0]:.4g}; "
                   f"needs {self.min_improvement:.2%})",
            recommendation="progress has stalled: a decaying lr_schedule (cosine, exponential) "
                           "or plateau_patience > 0 lowers the learning rate when it does")


class Alignment(Criterion):
    """Attention alignment still below ``min_score`` at or after epoch ``by_epoch``.

    A Tacotron2 whose attention has not become roughly diagonal by then rarely
    recovers; it babbles at inference whatever its loss.
    """

    type: Literal["alignment"] = "alignment"
    action: Action = Action.PRUNE
    min_score: float = Field(0.3, gt=0.0, le=1.0)
    by_epoch: int = Field(10, ge=1)

    def check(self, history: Sequence[EpochMetrics], direction: Direction) -> Finding | None:
        latest = history[-1]
        score = latest.value("alignment_score")
        if latest.epoch < self.by_epoch or score is None or score >= self.min_score:
            return None
        late = f" (needed by epoch {self.by_epoch})" if latest.epoch > self.by_epoch else ""
        return Finding(
            reason=f"alignment_score {score:.3f} is below {self.min_score:g} at epoch "
                   f"{latest.epoch}{late}",
            recommendation="the attention has not learned to align: check transcripts and "
                           "silence trimming, lower the learning rate or lengthen warmup_steps, "
                           "or lower p_attention_dropout")


class EarlyStopController:
    """Asks the enabled criteria, in config order, about every validation of one trial."""

    def __init__(self, criteria: Mapping[str, Criterion], direction: Direction = "minimize"):
        self.criteria = dict(criteria)
        self.direction: Direction = direction
        self._history: list[EpochMetrics] = []
        self._attempt_start = 0

    @property
    def history(self) -> Sequence[EpochMetrics]:
        """Every validation of the trial, across adaptations."""
        return tuple(self._history)

    @property
    def attempt(self) -> Sequence[EpochMetrics]:
        """The validations since the trial started or last adapted: what criteria judge."""
        return tuple(self._history[self._attempt_start:])

    def observe(self, metrics: EpochMetrics) -> Decision:
        """Record ``metrics``; the first criterion that fires decides, else CONTINUE."""
        self._history.append(metrics)
        attempt = self.attempt
        for name, criterion in self.criteria.items():
            if not criterion.enabled:
                continue
            finding = criterion.check(attempt, self.direction)
            if finding is not None:
                return Decision(action=criterion.action, epoch=metrics.epoch, criterion=name,
                                reason=finding.reason, recommendation=finding.recommendation)
        return Decision(action=Action.CONTINUE, epoch=metrics.epoch)

    def reset_after_adaptation(self) -> None:
        """Start a new attempt: call when the trial restarts with adapted hparams.

        The restarted run gets the grace a fresh trial gets (warm-up epochs, a full
        patience and plateau window): judged on the old run's trend, the criterion
        that caused the adaptation would fire again on the first validation, before
        the new values could show any effect. The trial's best value across attempts
        is the runner's to keep, as it reports every value to Optuna.
        """
        self._attempt_start = len(self._history)
