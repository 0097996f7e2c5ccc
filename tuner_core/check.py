"""``python -m tuner_core check``: is everything in place to run a study? (the seed's --test)"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna

from train.tacotron2.hparams import HParams
from tuner_core import tracking
from tuner_core.config.sections import Config
from tuner_core.errors import NotReady, StorageUnavailable
from tuner_core.lazy import LazyModule
from tuner_core.storage.opening import open_storage, sqlite_file

# torch, which checking a corpus needs, loads with the first check.
data = LazyModule("train.tacotron2.data")
torch = LazyModule("torch")

Check = tuple[str, bool, str]


def run_checks(config: Config) -> Iterator[Check]:
    """(name, passed, detail) for each component; the config is valid if we got here.

    Nothing is written: a store that does not exist yet is reported as new, and created
    by the first study.
    """
    yield "config", True, f"experiment {config.experiment_name}"
    yield state_folder(config)
    yield _dataset(config)
    yield _storage(config)
    yield _mlflow(config)
    yield _torch()
    yield _bot_token(config)


def require_ready(config: Config) -> None:
    """Refuse (:class:`NotReady`) a study whose state folder, dataset, storage or MLflow
    store cannot work, before anything of it is created; the first problem found says why."""
    for check in (state_folder, _dataset, _storage, _mlflow):
        name, passed, detail = check(config)
        if not passed:
            raise NotReady(f"{name}: {detail}")


def state_folder(config: Config) -> Check:
    """Whether the state folder is a writable folder, or can be created as one (its
    nearest existing ancestor is a writable folder); nothing is created."""
    folder = config.state_dir
    if folder.exists():
        if folder.is_dir() and _writable_folder(folder):
            return "state folder", True, str(folder)
        return "state folder", False, f"{folder}: not a writable folder"
    problem = _cannot_create(folder)
    if problem is not None:
        return "state folder", False, f"{folder}: {problem}"
    return "state folder", True, f"{folder} (new: the first study creates it)"


def _dataset(config: Config) -> Check:
    try:
        count = data.check_corpus(config.dataset_path,
                                  HParams.from_overrides(config.fixed_hparams))
    except data.DataError as exc:
        return "dataset", False, str(exc)
    return "dataset", True, f"{count} utterances in {config.dataset_path}"


def _storage(config: Config) -> Check:
    new = _new_sqlite_file(config.storage_url)
    if new is not None:
        return "storage", *new
    try:
        studies = optuna.get_all_study_summaries(open_storage(config))
    except StorageUnavailable as exc:
        return "storage", False, str(exc)
    return "storage", True, f"{config.storage_shown} ({len(studies)} studies)"


def _mlflow(config: Config) -> Check:
    if not config.mlflow.enabled:
        return "mlflow", True, "disabled"
    uri = config.tracking_uri
    new = _new_sqlite_file(uri)
    if new is not None:
        return "mlflow", *new
    try:
        with _answer_within_seconds():
            tracking.mlflow_client(config).search_experiments(max_results=1)
    except Exception as exc:  # a server down, a refused login: show it
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return "mlflow", False, f"{uri}: {cause}"
    return "mlflow", True, uri


def _new_sqlite_file(url: str) -> tuple[bool, str] | None:
    """(passed, detail) for a SQLite database that does not exist yet, without creating
    it: whether it can be; None for one that exists, or another kind of store."""
    path = sqlite_file(url)
    if path is None or path.exists():
        return None
    problem = _cannot_create(path)
    if problem is not None:
        return False, f"{url}: {problem}"
    return True, f"{url} (new: the first study creates it)"


def _cannot_create(path: Path) -> str | None:
    """Why ``path``, which does not exist, cannot be created; None if it can (its nearest
    existing ancestor is a writable folder)."""
    ancestor = path.parent
    while not ancestor.exists():  # False too below a regular file
        ancestor = ancestor.parent
    if ancestor.is_dir() and _writable_folder(ancestor):
        return None
    return f"cannot be created ({ancestor} is not a writable folder)"


def _writable_folder(folder: Path) -> bool:
    """Whether files can be made in ``folder``. Permission bits do not stop root, and say
    nothing of folders such as /proc: for root, a probe folder is made and removed."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    if os.geteuid() != 0:
        return True
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".smart-tuner-check-", dir=folder))
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _answer_within_seconds() -> Iterator[None]:
    """MLflow retries a request to a server for minutes by default (right for a worker
    riding out an outage, wrong for a check): here it tries once, for 5 seconds."""
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _torch() -> Check:
    if torch.cuda.is_available():
        devices = ", ".join(torch.cuda.get_device_name(i)
                            for i in range(torch.cuda.device_count()))
        return "torch", True, f"torch {torch.__version__}, CUDA: {devices}"
    return "torch", True, f"torch {torch.__version__}, CPU only ({torch.get_num_threads()} threads)"


def _bot_token(config: Config) -> Check:
    token = config.telegram.bot_token or os.environ.get("TELEGRAM_BOT_TOKEN")
    if token:
        return "telegram", True, "bot token is set"
    needed = config.telegram.enabled
    return "telegram", not needed, ("bot token missing: set TELEGRAM_BOT_TOKEN"
                                    if needed else "disabled; no bot token set")
