"""``python -m tuner_core check``: is everything in place to run a study? (the seed's --test)"""

from __future__ import annotations

import os
from collections.abc import Iterator

from tuner_core.config import Config

Check = tuple[str, bool, str]


def run_checks(config: Config) -> Iterator[Check]:
    """(name, passed, detail) for each component; the config is valid if we got here."""
    yield "config", True, f"experiment {config.experiment_name}"
    yield _dataset(config)
    yield _storage(config)
    yield _mlflow(config)
    yield _torch()
    yield _bot_token(config)


def _dataset(config: Config) -> Check:
    from train.audio import AudioError, load_wav
    from train.data import DataError, read_utterances
    from train.hparams import HParams

    hp = HParams.from_overrides(config.fixed_hparams)
    try:
        utterances = read_utterances(config.dataset_path)
        load_wav(utterances[0].audio_path, hp.sampling_rate)
    except (DataError, AudioError) as exc:
        return "dataset", False, str(exc)
    return "dataset", True, f"{len(utterances)} utterances in {config.dataset_path}"


def _storage(config: Config) -> Check:
    import optuna

    from tuner_core.study import open_storage

    try:
        studies = optuna.get_all_study_summaries(open_storage(config))
    except Exception as exc:  # any driver error means "not reachable"; show it
        return "storage", False, f"{config.storage_shown}: {exc}"
    return "storage", True, f"{config.storage_shown} ({len(studies)} studies)"


def _mlflow(config: Config) -> Check:
    if not config.mlflow.enabled:
        return "mlflow", True, "disabled"
    from tuner_core.tracking import mlflow_client

    uri = config.tracking_uri
    try:
        mlflow_client(config).search_experiments(max_results=1)
    except Exception as exc:  # a server down, a refused login: show it
        return "mlflow", False, f"{uri}: {exc}"
    return "mlflow", True, uri


def _torch() -> Check:
    import torch

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
