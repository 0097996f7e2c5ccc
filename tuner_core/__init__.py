"""Smart Tuner's engine: Optuna studies of Tacotron2 trainings, supervised epoch by epoch.

The public API is :class:`SmartTuner` (:mod:`tuner_core.api`)::

    from tuner_core import SmartTuner

    tuner = SmartTuner("config/demo.yaml")
    result = tuner.run_optimization(n_trials=2)
    print(result["best_parameters"], result["best_value"])

and, for the bot and other front ends, starting a study in a worker process,
requesting a stop, reading status, the best trial and the trial list, and the model
registry (versions, promotion, export). The errors it raises are in
:mod:`tuner_core.errors`.

The package is in rooms by concern, each importing only the rooms below it::

    api, __main__ (CLI), check   the facade, the command line, readiness checks
    reporting/                   read-only views: status, notifications, plots, reports
    study/                       a study's life, sampler and pruner, the worker, retention
    tracking/                    MLflow runs and the model registry (only where enabled)
    trial/                       one trial = one supervised trainer process; listener hooks
    storage/                     opening the Optuna storage, locks, retries, the names kept
    config/                      the YAML config: location, loading, validation
    rules/                       search space, early-stopping criteria, adaptation, anomalies
    errors, lazy, logs           what every room may use

Names load on first use (:mod:`tuner_core.lazy`): importing the package is cheap.
"""

from tuner_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "SmartTuner": ".api",
    "PROJECT_ROOT": ".config.location",
    "Config": ".config.sections",
    "load_config": ".config.loading",
    "TrialListener": ".trial.listener",
    "ConfigError": ".errors",
    "NotReady": ".errors",
    "RegistryError": ".errors",
    "StorageUnavailable": ".errors",
    "StudyBusy": ".errors",
    "StudyNotFound": ".errors",
})
