"""Which trials confirm which: a champion trained again with other training seeds.

Once a study's budget is spent, its ``optimization.confirm.top_k`` best configurations
are queued again, ``seeds`` times each, with ``training_seed`` (the ``seed`` hyperparameter)
set and ``confirms`` naming the trial they train again (:mod:`tuner_core.study.confirmation`).
A confirmed configuration is then judged by the mean of its values, which one lucky seed
cannot decide alone.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState

from tuner_core.storage.attributes import CONFIRMS_ATTR


@dataclass
class Confirmation:
    """A configuration's trial and the trials that confirm it, as they stand."""

    trial: int  # the trial confirmed: the first of its configuration
    params: dict
    values: list[float] = field(default_factory=list)  # of the complete ones, trial first
    trials: list[int] = field(default_factory=list)  # every one, trial first
    pending: int = 0  # confirmation trials not finished yet

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def seeds(self) -> int:
        return len(self.values)

    @property
    def done(self) -> bool:
        return self.pending == 0

    def as_dict(self) -> dict:
        return {"trial": self.trial, "trials": self.trials, "mean": self.mean,
                "std": self.std, "seeds": self.seeds, "done": self.done}


def confirmation_groups(trials: list[FrozenTrial]) -> list[Confirmation]:
    """Every configuration sent to confirmation, in the order of the trials confirmed."""
    by_trial: dict[int, Confirmation] = {}
    for trial in trials:
        origin = trial.user_attrs.get(CONFIRMS_ATTR)
        if origin is not None and origin not in by_trial:
            first = trials[origin]
            by_trial[origin] = Confirmation(origin, first.params, [first.value], [origin])
        if origin is not None:
            group = by_trial[origin]
            group.trials.append(trial.number)
            if trial.state is TrialState.COMPLETE:
                group.values.append(trial.value)
            elif not trial.state.is_finished():
                group.pending += 1
    return [by_trial[origin] for origin in sorted(by_trial)]


def confirmed_best(trials: list[FrozenTrial], minimize: bool) -> Confirmation | None:
    """The confirmed configuration of the best mean, once every confirmation has ended;
    None before (or without) confirmation."""
    groups = confirmation_groups(trials)
    if not groups or not all(group.done for group in groups):
        return None
    return (min if minimize else max)(groups, key=lambda group: group.mean)
