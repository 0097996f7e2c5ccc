"""The sampler that draws each trial's hyperparameters, seeded per trial.

Optuna's samplers take one seed per sampler object. Two workers of one study built
from the same config would then draw the same "random" parameters, trial for trial,
and spend half the budget on duplicates. With ``optimization.seed`` set, each trial
is drawn instead by a sampler seeded with (seed, trial number): a study run again
suggests the same parameters again, and no two trials share a seed, whichever
worker runs them. The samplers keep no other state between trials worth keeping
(TPE and GP refit on the storage's trials, CMA-ES keeps its state in the storage).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from tuner_core.config.sections import OptimizationConfig


def make_sampler(opt: OptimizationConfig) -> BaseSampler:
    """The configured sampler; with a seed, one seeded per trial (:class:`TrialSeeded`)."""
    if opt.seed is None:
        return _sampler(opt, None)
    return TrialSeeded(opt, opt.seed)


def _sampler(opt: OptimizationConfig, seed: int | None) -> BaseSampler:
    kind, startup = opt.sampler.type, opt.sampler.n_startup_trials
    if kind == "tpe":
        return optuna.samplers.TPESampler(n_startup_trials=startup, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(n_startup_trials=startup, seed=seed)
    return optuna.samplers.GPSampler(n_startup_trials=startup, seed=seed)


class TrialSeeded(BaseSampler):
    """The configured sampler, made afresh for each trial with the seed (seed, number).

    A worker's devices are threads that share one study, and so this object: each trial
    keeps its own sampler until it ends, so that no thread draws with another's.
    """

    def __init__(self, opt: OptimizationConfig, seed: int):
        self._opt = opt
        self._seed = seed
        self._samplers: dict[int, BaseSampler] = {}  # by trial number, while it runs

    def of(self, trial: FrozenTrial | optuna.Trial) -> BaseSampler:
        """The sampler that draws the parameters of ``trial``, a running trial."""
        return self._samplers[trial.number]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # Mixed by SeedSequence, so (seed 1, trial 0) and (seed 0, trial 1) differ.
        trial_seed = np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0]
        sampler = self._samplers[trial.number] = _sampler(self._opt, int(trial_seed))
        sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return self.of(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.of(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.of(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._samplers.pop(trial.number).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        for sampler in self._samplers.values():
            sampler.reseed_rng()
