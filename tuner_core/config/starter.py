"""The starter config that ``smart-tuner init`` writes, for an installed package.

It is the shipped config (``config/smart_tuner.yaml``, every setting explained; the
package carries it as ``tuner_core/config/smart_tuner.yaml``) with its paths made the
starter's own: the shipped one sits in the project's ``config/`` folder and names the
project's folders from there (``../.state``); the starter names them beside itself
(``.state``), relative paths being taken from the config's folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from tuner_core.config.location import STARTER_CONFIG

SHIPPED_CONFIG = Path(__file__).with_name("smart_tuner.yaml")

# A "../" that starts a path (after a space, a colon or ":-"), not one inside a path.
_UP_FROM_CONFIG_FOLDER = re.compile(r"(?<![\w./])\.\./")


def starter_text() -> str:
    return _UP_FROM_CONFIG_FOLDER.sub("", SHIPPED_CONFIG.read_text(encoding="utf-8"))


def write_starter(folder: Path) -> Path:
    """Write the starter config into ``folder`` (created if need be); its path.

    Raises FileExistsError rather than replace a file that is there.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STARTER_CONFIG
    with path.open("x", encoding="utf-8") as starter:  # "x": never overwrite
        starter.write(starter_text())
    return path
