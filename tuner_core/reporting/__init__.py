"""Read-only views of studies for people: status, summaries, the chat's notifications,
plots, reports, and what to do after a study.

Rooms: :mod:`~tuner_core.reporting.summary` (status, best trial, trial list),
:mod:`~tuner_core.reporting.events` (the notifications a front end sends),
:mod:`~tuner_core.reporting.plots` (figures; loads matplotlib),
:mod:`~tuner_core.reporting.report` (``report.md`` with its figures),
:mod:`~tuner_core.reporting.next_steps` (the closing note of ``tune``),
:mod:`~tuner_core.reporting.progress` (the command line's progress bars).

Everything is computed from the storage (and MLflow, for the registry's lines), so the
CLI, the bot and a remote machine see the same thing. May import every room below it:
:mod:`tuner_core.study`, :mod:`tuner_core.tracking`, :mod:`tuner_core.storage`,
:mod:`tuner_core.config`, :mod:`tuner_core.rules`; nothing here writes.
"""

from tuner_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "best_trial": ".summary",
    "confirmation_line": ".summary",
    "result_summary": ".summary",
    "studies_list": ".summary",
    "study_status": ".summary",
    "trial_row": ".summary",
    "trials_list": ".summary",
    "Kind": ".events",
    "Notification": ".events",
    "collect": ".events",
    "finished_studies_backlog": ".events",
    "study_started_id": ".events",
    "anytime_png": ".plots",
    "learning_curves_png": ".plots",
    "write_report": ".report",
    "closing_note": ".next_steps",
})
