"""The YAML config: where it is looked for, how it loads, and what it may hold.

Rooms: :mod:`~tuner_core.config.location` (the default path, the project's folder; light),
:mod:`~tuner_core.config.starter` (the starter config ``init`` writes; light),
:mod:`~tuner_core.config.loading` (file, environment, ``--set``),
:mod:`~tuner_core.config.paths` (where relative paths are taken from), and
:mod:`~tuner_core.config.sections` (the pydantic models of its blocks), whose problems read
as :mod:`~tuner_core.config.problems` words them. ``smart_tuner.yaml`` here is a link to the
project's ``config/smart_tuner.yaml``, so that the package carries it.

May import: :mod:`tuner_core.rules` (the criteria and search ranges it validates),
``train.tacotron2.hparams``, :mod:`tuner_core.errors`; nothing else of ``tuner_core``.
"""

from tuner_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "CONFIG_HELP": ".location",
    "PROJECT_ROOT": ".location",
    "default_config_path": ".location",
    "load_config": ".loading",
    "ENVIRONMENT_DEFAULTS": ".loading",
    "Config": ".sections",
    "OptimizationConfig": ".sections",
    "TelegramConfig": ".sections",
    "ConfigError": "tuner_core.errors",
})
