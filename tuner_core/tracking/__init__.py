"""MLflow: one run per study and per trial, and the model registry. Loaded only where
``mlflow.enabled`` is true (a worker without it imports no MLflow).

Rooms: :mod:`~tuner_core.tracking.store` (the tracking store of a config: client,
experiment, UI), :mod:`~tuner_core.tracking.provenance` (the code version and dataset of
every run), :mod:`~tuner_core.tracking.runs` (the listener that mirrors trials into
runs), :mod:`~tuner_core.tracking.registering` (the listener that registers each new best
trial), :mod:`~tuner_core.tracking.registry` (reading, promoting and exporting versions).

May import: :mod:`tuner_core.trial` (the listener hooks), :mod:`tuner_core.storage`,
:mod:`tuner_core.config`, ``train`` (to load a checkpoint as a model) and MLflow.
"""

from tuner_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "STUDY_TAG": ".store",
    "ensure_experiment": ".store",
    "experiment_url": ".store",
    "mlflow_client": ".store",
    "mlflow_ui_command": ".store",
    "run_figures": ".store",
    "MlflowTracker": ".runs",
    "TRACKED_METRICS": ".runs",
    "BestCheckpoint": ".registering",
    "RegistryListener": ".registering",
    "register_version": ".registering",
    "CHAMPION": ".registry",
    "export": ".registry",
    "list_versions": ".registry",
    "load_model_uri": ".registry",
    "load_registered_model": ".registry",
    "promote": ".registry",
    "resolve": ".registry",
    "RegistryError": "tuner_core.errors",
})
