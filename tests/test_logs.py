"""The tuner's logging: what reaches the console, and what only the log file."""

import logging

import optuna
import pytest

from tuner_core.logs import setup_logging
from tuner_core.trial.runner import TrialCrashed


@pytest.fixture
def logged(tmp_path, capfd):
    """A function that sets up logging as the CLI does (console and file), to call in the
    test itself (where ``capfd`` captures the console); the log file's path."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers.clear()  # pytest's, which basicConfig(force=True) would close
    yield lambda: setup_logging(tmp_path, console=True, log_file=True)
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = saved


@pytest.fixture
def optuna_records():
    """The records Optuna's loggers emit (its own handler writes to the stderr of when it
    was made, which no capture sees)."""
    class Collected(logging.Handler):
        def __init__(self):
            super().__init__()
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    collected = Collected()
    logging.getLogger("optuna").addHandler(collected)
    yield collected.records
    logging.getLogger("optuna").removeHandler(collected)


def test_a_crashed_trial_is_one_line_without_optunas_traceback(logged, capfd, optuna_records):
    path = logged()

    def crashes(trial: optuna.Trial) -> float:
        # What the runner does: its one line with the reason, then the error.
        logging.getLogger("tuner_core.trial.runner").warning(
            "trial %d failed: trainer exited with code 1: OSError: disk full", trial.number)
        raise TrialCrashed("trainer exited with code 1: OSError: disk full")

    study = optuna.create_study()
    study.optimize(crashes, n_trials=1, catch=(TrialCrashed,))
    assert study.trials[0].state is optuna.trial.TrialState.FAIL
    (line,) = capfd.readouterr().err.splitlines()  # one line, with the reason
    assert line.endswith("trial 0 failed: trainer exited with code 1: OSError: disk full")
    assert "Traceback" not in path.read_text()
    assert [record.getMessage() for record in optuna_records] == []


def test_another_error_keeps_optunas_warning_and_traceback(logged, optuna_records):
    logged()

    def breaks(trial: optuna.Trial) -> float:
        raise KeyError("a bug")

    optuna.create_study().optimize(breaks, n_trials=1, catch=(KeyError,))
    (warning,) = [record for record in optuna_records if record.exc_info]
    assert "KeyError('a bug')" in warning.getMessage()


def test_mlflows_info_records_go_to_the_log_file_only(logged, capfd):
    path = logged()
    logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    logging.getLogger("mlflow.tracking").warning("the server is slow")
    logging.getLogger("tuner_core.study").info("study s: 3 trials")
    stderr = capfd.readouterr().err
    assert "Creating initial" not in stderr and "Context impl" not in stderr, stderr
    assert "the server is slow" in stderr and "study s: 3 trials" in stderr
    log = path.read_text()
    assert "Creating initial MLflow database tables" in log and "Context impl" in log
