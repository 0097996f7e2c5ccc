"""The pruner a study's config names: Optuna's, wrapped in its ``PatientPruner`` when
``optimization.pruner.patience`` is set."""

from __future__ import annotations

import optuna

from tuner_core.config.sections import OptimizationConfig


def make_pruner(opt: OptimizationConfig) -> optuna.pruners.BasePruner:
    p = opt.pruner
    pruner: optuna.pruners.BasePruner
    if p.type == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials,
                                             n_warmup_steps=p.n_warmup_steps)
    elif p.type == "percentile":
        pruner = optuna.pruners.PercentilePruner(p.percentile, n_startup_trials=p.n_startup_trials,
                                                 n_warmup_steps=p.n_warmup_steps)
    elif p.type == "successive_halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, p.n_warmup_steps),
                                                        reduction_factor=p.reduction_factor)
    elif p.type == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=max(1, p.n_warmup_steps),
                                                reduction_factor=p.reduction_factor)
    else:
        pruner = optuna.pruners.NopPruner()
    if p.patience is not None and p.type != "none":
        pruner = optuna.pruners.PatientPruner(pruner, patience=p.patience)
    return pruner
