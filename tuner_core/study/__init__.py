"""A study and its workers: its life in the storage, the sampler and pruner it runs with,
the worker that runs its trials, checkpoint retention, and deleting it.

Rooms: :mod:`~tuner_core.study.life` (create, load, stop, budget, finish),
:mod:`~tuner_core.study.sampler` and :mod:`~tuner_core.study.pruner` (Optuna's, as the
config names them), :mod:`~tuner_core.study.worker` (the composition root: runner,
tracking, registry, retention), :mod:`~tuner_core.study.crew` (a worker's devices, one
trainer each), :mod:`~tuner_core.study.standing` (a standing worker, for every study),
:mod:`~tuner_core.study.retention` (which checkpoints stay),
:mod:`~tuner_core.study.deletion` (a study and all it left behind),
:mod:`~tuner_core.study.confirmation` (the champions trained again with other seeds).

May import: :mod:`tuner_core.tracking` (loaded only where MLflow is enabled),
:mod:`tuner_core.trial`, :mod:`tuner_core.storage`, :mod:`tuner_core.config`,
:mod:`tuner_core.rules`.
"""

from tuner_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "create_study": ".life",
    "default_study_name": ".life",
    "load_study": ".life",
    "request_stop": ".life",
    "stop_requested": ".life",
    "trials_left": ".life",
    "make_pruner": ".pruner",
    "enqueue_confirmations": ".confirmation",
    "TrialSeeded": ".sampler",
    "make_sampler": ".sampler",
    "run_worker": ".worker",
    "follow": ".standing",
    "RetentionListener": ".retention",
    "enforce_retention": ".retention",
    "delete_study": ".deletion",
    "study_footprint": ".deletion",
    "StudyNotFound": "tuner_core.errors",
    "StudyBusy": "tuner_core.errors",
})
