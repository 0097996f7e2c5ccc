"""Every name Smart Tuner keeps on studies and trials in the Optuna storage, in one place.

The storage is the single source of truth: workers write these attributes and the CLI,
the bot and the reports read them, on any machine. Readers import the names from here,
never from the modules that write them.

A study's user attributes:

==================  =========================================================================
``n_trials``        its trial budget (total, all workers together)
``created_at``      Unix time it was created
``config``          the search space, fixed hyperparameters and objective it runs with
``stop_requested``  ``{"at": time, "by": who}``, set by a stop request
``finished_at``     set by the last worker to leave, with ``end_reason``
``confirmation``    the trials whose configurations were sent to confirmation (a list)
``mlflow_parent_run_id``  its parent run in MLflow (when tracking is on)
==================  =========================================================================

A trial's user attributes: ``outcome`` (an :class:`Outcome`), ``criterion``, ``reason``,
``recommendation``, ``stop_epoch``, ``adaptations``, ``run_dir``, ``worker``, ``host``, ``device``,
``best_checkpoint``, ``last_metrics`` (the :data:`VALIDATION_METRICS` of its latest
validation), ``anomalies``, ``seconds``, ``epochs_trained``; for failures ``exit_code`` and
``log_tail``; ``mlflow_run_id`` and ``registered_version`` when tracking is on;
``listening`` (a completed trial's listening evaluation: ``python -m train.evaluate``'s
summary, :mod:`tuner_core.trial.evaluation`), written after the trial ended unless its value
or registration waits on it, and then ``requirements_unmet`` (the ``registry.requirements``
it fails, each with its value; empty when it meets them all). A
confirmation trial also has ``confirms`` (the number of the trial it trains again) and
``training_seed`` (the ``seed`` hyperparameter it trains with).

Per validation, a trial keeps one number here: its intermediate value (the objective, or
``optimization.pruner.metric``), which Optuna's tools plot. User attributes stay small, as
``optuna trials`` prints them all on every row and optuna-dashboard cuts them at 1,024
characters: every metric of every validation is in MLflow, where tracking is on.
"""

from __future__ import annotations

from typing import Any

# The study's.
BUDGET_ATTR = "n_trials"
CREATED_ATTR = "created_at"
CONFIG_ATTR = "config"
STOP_ATTR = "stop_requested"
FINISHED_ATTR = "finished_at"
END_REASON_ATTR = "end_reason"
PARENT_RUN_ATTR = "mlflow_parent_run_id"
CONFIRMATION_ATTR = "confirmation"

# A trial's, beside the outcome attributes the runner writes.
TRIAL_RUN_ATTR = "mlflow_run_id"
VERSION_ATTR = "registered_version"
LISTENING_ATTR = "listening"
REQUIREMENTS_ATTR = "requirements_unmet"  # the registry.requirements it failed ([]: none)
CONFIRMS_ATTR = "confirms"
TRAINING_SEED_ATTR = "training_seed"

# The validation-event fields the trial keeps of its latest validation ("last_metrics").
VALIDATION_METRICS = ("epoch", "step", "train_loss", "val_loss", "val_mel_loss", "val_gate_loss",
                   "val_guided_attention_loss", "alignment_score", "attention_focus",
                   "attention_progress", "attention_coverage", "stop_rate", "length_ratio",
                   "grad_norm", "lr", "seconds")


class Outcome:
    """The values of the ``outcome`` user attribute."""

    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    PRUNED = "pruned"
    STOPPED_BY_USER = "stopped_by_user"
    FAILED = "failed"


def worker_lost(retry: int | None) -> dict[str, Any]:
    """The outcome attributes of a trial whose worker died (killed, its machine lost),
    given the number of the trial that retries it (None: its retries are used up)."""
    then = f"retried as trial {retry}" if retry is not None else "not retried (max_retries reached)"
    return {"outcome": Outcome.FAILED, "criterion": "worker_lost", "reason": f"worker lost; {then}",
            "recommendation": "read the worker's log and its machine's for why it died"}
