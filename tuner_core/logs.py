"""Logging for the tuner's processes: the console and a rotating file in the state folder."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def setup_logging(state_dir: Path, name: str = "smart_tuner", verbose: bool = False,
                  console: bool = True) -> Path:
    """Log to ``state_dir/logs/<name>.log`` (rotated at 5 MB, 3 kept) and stderr."""
    log_dir = state_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{name}.log"
    handlers: list[logging.Handler] = [
        logging.handlers.RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3)]
    if console:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=handlers,
                        force=True)
    # Optuna logs every trial itself; ours says more, so keep Optuna's to warnings.
    logging.getLogger("optuna").setLevel(logging.WARNING)
    return path
