"""Where the command lines look for the config, and where the project lives.

Kept apart from the config's validation so that ``--help`` loads neither YAML nor pydantic.
"""

from __future__ import annotations

import os
from pathlib import Path

# The config the command lines read when not told (--config).
CONFIG_VARIABLE = "SMART_TUNER_CONFIG"
DEFAULT_CONFIG = Path("config/smart_tuner.yaml")
CONFIG_HELP = (f"the YAML config (default: ${CONFIG_VARIABLE}, else {DEFAULT_CONFIG}; "
               "the demo's is config/demo.yaml)")


def default_config_path() -> Path:
    return Path(os.environ.get(CONFIG_VARIABLE) or DEFAULT_CONFIG)


# The folder above the packages: trainers and workers start there, with it on their path.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
