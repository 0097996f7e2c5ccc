"""Declared rules a study runs by: what it may search, when a trial stops early, how a
struggling trial is corrected, and what in its metrics is an anomaly.

Rooms: :mod:`~tuner_core.rules.search_space` (ranges, suggesting and describing them),
:mod:`~tuner_core.rules.early_stop` (the criteria and their controller),
:mod:`~tuner_core.rules.adaptation` (corrected hyperparameters),
:mod:`~tuner_core.rules.metric_history` (a trial's per-validation series and anomalies).

Pure rules on numbers and trials: may import Optuna and pydantic, nothing of
``tuner_core`` (the config, one floor up, is built from these).
"""

from tuner_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "Categorical": ".search_space",
    "FloatRange": ".search_space",
    "IntRange": ".search_space",
    "describe": ".search_space",
    "suggest": ".search_space",
    "Action": ".early_stop",
    "Decision": ".early_stop",
    "EarlyStopController": ".early_stop",
    "EpochMetrics": ".early_stop",
    "adapt_hparams": ".adaptation",
    "detect_anomalies": ".metric_history",
})
