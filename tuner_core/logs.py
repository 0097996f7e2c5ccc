"""Logging for the tuner's processes: the console and a rotating file in the state folder."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

# The pid tells apart the workers of one machine, which share its state folder's log file.
LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"

# Libraries whose INFO records (MLflow's "Creating initial MLflow database tables...",
# alembic's migrations) go to the log file only: on the console they would stand between
# a command's own lines and across its progress bars.
QUIET_ON_CONSOLE = ("mlflow", "alembic")


class AlreadyLogged(Exception):
    """An error its raiser has logged in one line, with its reason: Optuna's warning on the
    trial it fails (a traceback) is left out."""


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
        stderr = logging.StreamHandler()
        stderr.addFilter(_loud_enough_for_the_console)
        handlers.append(stderr)
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        handlers=handlers or [logging.NullHandler()], force=True)
    # Optuna logs every trial itself; ours says more, so keep Optuna's to warnings...
    logging.getLogger("optuna").setLevel(logging.WARNING)
    # ...and, of its two warnings on a failed trial, to the traceback of an error not
    # logged already.
    optimize = logging.getLogger("optuna.study._optimize")
    if _not_logged_already not in optimize.filters:
        optimize.addFilter(_not_logged_already)
    _adopt_mlflow_loggers()
    return path


def _loud_enough_for_the_console(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or (
        record.name.partition(".")[0] not in QUIET_ON_CONSOLE)


def _not_logged_already(record: logging.LogRecord) -> bool:
    """Whether a record of Optuna's optimize loop says something not said already: not its
    warning on an :class:`AlreadyLogged` error, nor the "Trial N failed with value None."
    that follows every failure (a trial that raised has no value)."""
    error = record.exc_info[1] if record.exc_info else None
    return not (isinstance(error, AlreadyLogged)
                or record.getMessage().endswith(" failed with value None."))


def _adopt_mlflow_loggers() -> None:
    """Let MLflow's and alembic's records go where ours go, not to MLflow's own stderr
    handler (which would print "Creating initial MLflow database tables..." across the
    progress bars of ``tune``)."""
    # MLflow sets its handlers when imported, unless told not to...
    os.environ["MLFLOW_CONFIGURE_LOGGING"] = "false"
    # ...and draws a progress bar on stderr for every artifact it downloads (a setting it
    # reads at each download).
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    # ...and may have been imported already.
    for name in QUIET_ON_CONSOLE:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    # MLflow's setting: at INFO, SQLAlchemy would log every SQL statement.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
