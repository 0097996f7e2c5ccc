"""The facade: :class:`SmartTuner`, what the bot, the CLI and users' scripts call::

    from tuner_core import SmartTuner

    tuner = SmartTuner("config/demo.yaml")
    result = tuner.run_optimization(n_trials=2)
    print(result["best_parameters"], result["best_value"])

and, for the bot and other front ends, starting a study in a worker process,
requesting a stop, reading status, the best trial and the trial list, and the model
registry (versions, promotion, export).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from tuner_core import reporting, tracking
from tuner_core.check import require_ready
from tuner_core.config.loading import load_config
from tuner_core.config.location import PROJECT_ROOT
from tuner_core.config.sections import Config
from tuner_core.errors import RegistryError, StudyNotFound
from tuner_core.reporting.summary import (
    best_trial,
    result_summary,
    studies_list,
    study_status,
    trial_row,
    trials_list,
)
from tuner_core.rules.search_space import describe
from tuner_core.storage.attributes import VERSION_ATTR
from tuner_core.storage.fleet import fleet
from tuner_core.storage.opening import open_storage, sqlite_file, storage_exists
from tuner_core.study.life import create_study, load_study, request_stop
from tuner_core.study.worker import run_worker
from tuner_core.trial.listener import TrialListener


class SmartTuner:
    """One config, many studies. Every method reads or writes the shared storage."""

    def __init__(self, config_path: str | Path = "config/smart_tuner.yaml",
                 environ: Mapping[str, str] | None = None, overrides: Sequence[str] = ()):
        """``overrides``: ``key.path=value`` settings over the file's (see load_config)."""
        self.config_path = Path(config_path).resolve()
        self.overrides = list(overrides)
        self.config: Config = load_config(self.config_path, environ, self.overrides)

    def run_optimization(self, n_trials: int | None = None, study_name: str | None = None,
                         listener: TrialListener | None = None) -> dict[str, Any]:
        """Run a study in this process until its budget is used or a stop is requested.

        Returns ``best_parameters``, ``best_value``, ``best_trial``, ``n_trials``,
        ``study_name``, ``states`` (trial counts per Optuna state), ``outcomes`` (per
        outcome: a trial stopped on request is PRUNED for Optuna, "stopped_by_user" here)
        and ``end_reason``.
        Raises :class:`NotReady` when the dataset, storage or MLflow store cannot work.
        """
        require_ready(self.config)
        study = create_study(self.config, study_name, n_trials)
        run_worker(self.config, study, listener)
        return result_summary(study)

    def start_study(self, n_trials: int | None = None, study_name: str | None = None,
                    log_file: Path | None = None, local_worker: bool = True
                    ) -> tuple[str, subprocess.Popen | None]:
        """Create a study and run it in a new local worker process; (name, process).
        With ``local_worker`` false the study is only created (process None): standing
        workers (``worker --follow``) anywhere on the storage take it.

        The worker outlives its caller (its own session), so a restarted bot finds
        the study still running. It trains on the config's ``trainer.devices``, one trial
        per device at once. Raises :class:`NotReady` (one line) when the dataset,
        storage or MLflow store cannot work; nothing is created then.
        """
        require_ready(self.config)
        study = create_study(self.config, study_name, n_trials)
        if not local_worker:
            return study.study_name, None
        log_file = log_file or self.config.state_dir / "logs" / f"{study.study_name}.out"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "tuner_core", "worker", "--config", str(self.config_path),
                 *(f"--set={override}" for override in self.overrides),
                 "--study", study.study_name, "--quiet"],
                cwd=PROJECT_ROOT, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                start_new_session=True, env=os.environ.copy())
        return study.study_name, process

    def request_stop(self, study_name: str | None = None, by: str = "api") -> str:
        """Ask the workers of the study (the latest by default) to stop; its name."""
        study = self.study(study_name)
        request_stop(study, by)
        return study.study_name

    def status(self, study_name: str | None = None) -> dict[str, Any]:
        return study_status(self.study(study_name))

    def best(self, study_name: str | None = None) -> dict[str, Any] | None:
        return best_trial(self.study(study_name))

    def trials(self, study_name: str | None = None, limit: int | None = None
               ) -> list[dict[str, Any]]:
        return trials_list(self.study(study_name), limit)

    def studies(self) -> list[dict[str, Any]]:
        """Every study, oldest first; none while the storage does not exist (reading
        creates nothing: see :meth:`storage_exists`)."""
        return studies_list(self.storage()) if self.storage_exists() else []

    def workers(self) -> list[dict[str, Any]]:
        """The fleet: every worker on this storage's studies, by host and pid, with
        ``host``, ``pid``, ``devices``, ``following``, ``trials`` (``study``, ``number``,
        ``device``), ``last_seen`` (Unix time), ``idle`` and ``lost`` (no heartbeat for
        the grace period: killed, or its machine gone); see
        :mod:`tuner_core.storage.fleet`."""
        if not self.storage_exists():
            return []
        opt = self.config.optimization
        return fleet(self.storage().engine,
                     opt.heartbeat_grace_s or 2 * opt.heartbeat_interval_s)

    def storage_exists(self) -> bool:
        """Whether the study storage exists: a SQLite file is created by the first study,
        not by reading."""
        return storage_exists(self.config)

    def no_study_yet(self) -> StudyNotFound:
        """The error of a read that finds no study, saying where it looked."""
        where = self.config.storage_shown
        if not self.storage_exists():
            return StudyNotFound(f"no study yet: {where} does not exist")
        return StudyNotFound(f"no study yet in {where}")

    def storage(self) -> optuna.storages.BaseStorage:
        """The study storage (one per process and setting: it holds a connection pool)."""
        return open_storage(self.config)

    def search_space(self) -> list[str]:
        """The config's search space, a line per hyperparameter, for people."""
        return describe(self.config.hyperparameter_search_space)

    def learning_curves_png(self, study_name: str | None = None) -> bytes:
        """The study's learning curves (the latest study by default) as a PNG."""
        return reporting.learning_curves_png(self.study(study_name))

    def anytime_png(self, study_name: str | None = None) -> bytes:
        """The study's best value against the compute spent (the latest study by default)."""
        return reporting.anytime_png(self.study(study_name))

    def latest_study_name(self) -> str | None:
        """The name of the newest study, or None while there is none."""
        studies = self.studies()
        return studies[-1]["study_name"] if studies else None

    # --- the model registry (MLflow loads on first use: it takes seconds, and most
    # callers never need it) -----------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """Every registered model version, newest first; none while the registry's store
        does not exist (see :meth:`registry_exists`)."""
        return tracking.list_versions(self.config) if self.registry_exists() else []

    def registry_exists(self) -> bool:
        """Whether the model registry's MLflow store exists: reading a SQLite store that
        does not would create it (a server's is always there)."""
        path = sqlite_file(self.config.tracking_uri)
        return path is None or path.exists()

    def require_registry(self) -> None:
        """Raise :class:`RegistryError` (one line) while the registry's store does not
        exist; nothing is created."""
        if not self.registry_exists():
            raise RegistryError(f"no model registry yet at {self.config.tracking_uri}: the "
                                "first study with mlflow.enabled creates it")

    def promote(self, version: str, force: bool = False) -> dict[str, Any]:
        """Make ``version`` (a number or an alias) the champion; the promoted version's
        info, with ``replaced``: the former champion (None if it already was). A version
        that fails ``registry.requirements`` raises ``RequirementsUnmet`` (a RegistryError
        naming them), unless ``force``."""
        self.require_registry()
        return tracking.promote(self.config, version, force)

    def export(self, ref: str, out: Path) -> Path:
        """Write version ``ref`` (a number or an alias) to the folder ``out``; ``out``."""
        self.require_registry()
        return tracking.export(self.config, ref, Path(out))

    def best_version(self, study_name: str | None = None) -> str | None:
        """The model version registered from the study's best trial, if any."""
        try:
            best = self.study(study_name).best_trial
        except ValueError:  # no trial has completed
            return None
        return best.user_attrs.get(VERSION_ATTR)

    def audio_sample(self, study_name: str | None = None,
                     trial_number: int | None = None) -> Path | None:
        """The newest audio sample (``sample_*.wav``) of a trial, the best by default."""
        study = self.study(study_name)
        if trial_number is None:
            row = best_trial(study)
        else:
            trials = study.get_trials(deepcopy=False)
            if not 0 <= trial_number < len(trials):
                raise LookupError(f"study {study.study_name} has no trial {trial_number} "
                                  f"(it has {len(trials)})")
            row = trial_row(trials[trial_number])
        if row is None or row["run_dir"] is None:
            return None
        samples = Path(row["run_dir"], "artifacts").glob("sample_*.wav")
        return max(samples, key=lambda path: path.stat().st_mtime, default=None)

    def study(self, name: str | None = None) -> optuna.Study:
        """The study ``name``, or the latest one; :class:`StudyNotFound` if there is none."""
        name = name or self.latest_study_name()
        if name is None:
            raise self.no_study_yet()
        return load_study(self.config, name)
