"""Where the command lines look for the config, and where the project lives.

Kept apart from the config's validation so that ``--help`` loads neither YAML nor pydantic.
"""

from __future__ import annotations

import os
from pathlib import Path

# The config the command lines read when not told (--config): $SMART_TUNER_CONFIG, else
# the first of these in the working folder that exists (the one `init` writes, then a
# checkout's), else the first.
CONFIG_VARIABLE = "SMART_TUNER_CONFIG"
STARTER_CONFIG = Path("smart_tuner.yaml")
DEFAULT_CONFIGS = (STARTER_CONFIG, Path("config/smart_tuner.yaml"))
CONFIG_HELP = (f"the YAML config, its relative paths taken from its folder (default: "
               f"${CONFIG_VARIABLE}, else ./{DEFAULT_CONFIGS[0]} as init writes it, else "
               f"./{DEFAULT_CONFIGS[1]}; the demo's is config/demo.yaml)")


def default_config_path() -> Path:
    named = os.environ.get(CONFIG_VARIABLE)
    if named:
        return Path(named)
    return next((path for path in DEFAULT_CONFIGS if path.is_file()), DEFAULT_CONFIGS[0])


# The folder above the packages: trainers and workers start there, with it on their path.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
