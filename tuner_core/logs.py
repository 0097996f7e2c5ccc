"""Logging for the tuner's processes: the console and a rotating file in the state folder."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def setup_logging(state_dir: Path, name: str = "smart_tuner", verbose: bool = False,
                  console: bool = True, log_file: bool = True) -> Path | None:
    """Log to ``state_dir/logs/<name>.log`` (rotated at 5 MB, 3 kept) and stderr; the log
    file's path. Without ``log_file`` nothing is written into the state folder (None)."""
    handlers: list[logging.Handler] = []
    path = None
    if log_file:
        log_dir = state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / f"{name}.log"
        handlers.append(logging.handlers.RotatingFileHandler(path, maxBytes=5_000_000,
                                                             backupCount=3))
    if console:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        handlers=handlers or [logging.NullHandler()], force=True)
    # Optuna logs every trial itself; ours says more, so keep Optuna's to warnings.
    logging.getLogger("optuna").setLevel(logging.WARNING)
    _adopt_mlflow_loggers()
    return path


def _adopt_mlflow_loggers() -> None:
    """Let MLflow's and alembic's records go where ours go, not to MLflow's own stderr
    handler (which would print "Creating initial MLflow database tables..." across the
    progress bars of ``tune``)."""
    # MLflow sets its handlers when imported, unless told not to...
    os.environ["MLFLOW_CONFIGURE_LOGGING"] = "false"
    # ...and may have been imported already.
    for name in ("mlflow", "alembic"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    # MLflow's setting: at INFO, SQLAlchemy would log every SQL statement.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
