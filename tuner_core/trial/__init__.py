"""One trial = one trainer process, supervised epoch by epoch.

Rooms: :mod:`~tuner_core.trial.runner` (the Optuna objective: start the trainer, judge each
validation, end or adapt the run, record why), :mod:`~tuner_core.trial.listener` (the hooks
its observers implement), :mod:`~tuner_core.trial.process` (the trainer process and the
warm launcher that forks it), :mod:`~tuner_core.trial.devices` (the device each trainer
sees), :mod:`~tuner_core.trial.rendering` (plots and audio drawn
beside the next trial).

May import: :mod:`tuner_core.storage`, :mod:`tuner_core.config`, :mod:`tuner_core.rules`,
and ``train`` (its event schema and hyperparameters; the trainer itself runs in a child).
"""

from tuner_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "TrialCrashed": ".runner",
    "TrialRunner": ".runner",
    "ListenerGroup": ".listener",
    "TrialListener": ".listener",
    "is_new_best": ".listener",
    "TrainerLauncher": ".process",
    "TrainerProcess": ".process",
    "BackgroundRenders": ".rendering",
})
