"""What the Optuna storage holds and how it is opened: the single source of truth and the
control channel of every study.

Rooms: :mod:`~tuner_core.storage.attributes` (every name kept on studies and trials),
:mod:`~tuner_core.storage.opening` (the storage of a config, one per process),
:mod:`~tuner_core.storage.budget_lock` (taking a trial from the budget, across machines),
:mod:`~tuner_core.storage.retries` (which trial retries which, after a worker died),
:mod:`~tuner_core.storage.confirmations` (which trials confirm a champion over seeds),
:mod:`~tuner_core.storage.records` (completing a finished trial's record),
:mod:`~tuner_core.storage.file_lock` (a lock across the processes of one machine),
:mod:`~tuner_core.storage.fleet` (every worker, its devices and trials, by heartbeat),
:mod:`~tuner_core.storage.reconnecting` (a worker's storage calls wait out a restart).

May import: :mod:`tuner_core.config`, :mod:`tuner_core.errors`, Optuna and SQLAlchemy.
"""

from tuner_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "BUDGET_ATTR": ".attributes",
    "CONFIG_ATTR": ".attributes",
    "CONFIRMATION_ATTR": ".attributes",
    "CONFIRMS_ATTR": ".attributes",
    "TRAINING_SEED_ATTR": ".attributes",
    "CREATED_ATTR": ".attributes",
    "END_REASON_ATTR": ".attributes",
    "FINISHED_ATTR": ".attributes",
    "VALIDATION_METRICS": ".attributes",
    "Outcome": ".attributes",
    "PARENT_RUN_ATTR": ".attributes",
    "STOP_ATTR": ".attributes",
    "TRIAL_RUN_ATTR": ".attributes",
    "VERSION_ATTR": ".attributes",
    "worker_lost": ".attributes",
    "open_storage": ".opening",
    "open_worker_storage": ".opening",
    "BudgetLock": ".budget_lock",
    "fail_stale_trials": ".retries",
    "retried_from": ".retries",
    "retried_numbers": ".retries",
    "amend_user_attrs": ".records",
    "confirmation_groups": ".confirmations",
    "confirmed_best": ".confirmations",
    "StorageUnavailable": "tuner_core.errors",
})
