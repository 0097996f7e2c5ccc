"""The config's blocks as pydantic models, validated as a whole by :class:`Config`.

Every block rejects unknown keys, suggesting the closest valid one. The settings that
name files or folders are made absolute (:mod:`tuner_core.config.paths` says from where).
Defaults that depend on other settings (``checkpoint_dir``, ``storage``, the MLflow URI
and names) are filled in by validation, so a loaded config holds the effective values;
:meth:`Config.to_dict` gives them as plain data, with the bot token masked, for logging.
The search space is checked against the trainer's hyperparameters, so that a bad range
fails here and not in trial 17.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import sqlalchemy
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PlainValidator,
    SecretStr,
    SerializeAsAny,
    ValidationInfo,
    field_validator,
    model_validator,
)

from train.tacotron2.hparams import HParams, HParamsError
from tuner_core.config.blocks import Section, null_as_empty
from tuner_core.config.evaluation import (
    EvaluationConfig,
    Requirements,
    evaluation_measures_asked,
)
from tuner_core.config.paths import AbsolutePath, DatabaseUrl, OptionalPath, Program
from tuner_core.config.problems import (
    Loc,
    custom_errors,
    unknown_key,
    unknown_keys,
    validate_known_keys,
)
from tuner_core.rules.early_stop import CRITERIA, HIGHER_IS_BETTER, Criterion, Direction
from tuner_core.rules.requirements import (
    LISTENED_OBJECTIVES,
    Requirement,
    parse_requirements,
)
from tuner_core.rules.search_space import (
    SEARCH_RANGE_TYPES,
    Categorical,
    FloatRange,
    SearchRange,
)

# Numeric fields of the trainer's validation event that measure quality
# (lr, grad_norm and seconds are reported too, but optimising them makes no sense), and
# the listening evaluation's (tuner_core.rules.requirements.LISTENED_OBJECTIVES).
ValidationObjective = Literal["val_loss", "val_mel_loss", "val_gate_loss", "train_loss",
                              "alignment_score", "stop_rate"]
ObjectiveMetric = ValidationObjective | Literal["cer", "cer_ratio", "mcd", "skipped", "repeated"]
# What judges a trial's validations when its value is a listening metric measured only at
# its end: the validation's own stop_rate, else the validation loss.
TRAINING_PROXY = "val_loss"


def _by_type(kinds: Mapping[str, type[BaseModel]], what: str) -> PlainValidator:
    """Validate a ``{type: name, ...}`` mapping with the model ``kinds[name]``.

    ``kinds`` is read at validation time, so a class registered after this module was
    imported (a new early-stopping criterion) is found too.
    """
    def validate(entry: Any) -> BaseModel:
        if isinstance(entry, tuple(kinds.values())):
            return entry
        if not isinstance(entry, Mapping):
            raise ValueError(f"expected a mapping with a type, got {entry!r}")
        kind = entry.get("type")
        if not isinstance(kind, str) or kind not in kinds:
            problem = "missing" if kind is None else f"unknown {what} type {kind!r}"
            raise custom_errors([(("type",), f"{problem}; expected one of {', '.join(kinds)}")])
        model = kinds[kind]
        return validate_known_keys(entry, model.model_fields, model.model_validate)

    return PlainValidator(validate)


# --- The blocks ---------------------------------------------------------------------------

# trainer.devices (and --devices): CUDA indices, "auto", or "cpu:N".
DEVICES_SPEC = re.compile(r"auto|cpu:[1-9][0-9]*|[0-9]+(,[0-9]+)*")


class TrainerConfig(Section):
    """How trials launch ``python -m train``."""

    python: Program = Field(default_factory=lambda: sys.executable)
    hparams: Annotated[dict[str, Any], BeforeValidator(null_as_empty)] = Field(
        default_factory=dict)  # fixed for every trial
    grace_period_s: float = Field(30.0, gt=0)  # between SIGTERM and SIGKILL
    # Torch threads of each trainer; null: this machine's cores divided by the trainers
    # working on it.
    threads: int | None = Field(None, ge=1)
    # Start trainers by forking a process that has imported the trainer (train.launcher)
    # rather than each as its own python -m train: seconds less per trial and restart.
    preload: bool = True
    # With artifacts=end, also draw a trial's plots and sample (in the background, from its
    # best checkpoint) each time it beats the study's best completed trial; never with a
    # listened objective, which a trial's validations cannot compare with.
    render_new_best: bool = True
    # Every trial starts from this checkpoint's model weights (python -m train --warm-start),
    # this project's or NVIDIA's; ignore_layers keep their fresh initialisation.
    warm_start: OptionalPath = None
    ignore_layers: list[str] = Field(default_factory=list)
    # A recorded learning-curve table (bench/record_curves.py): each trial replays the
    # nearest recorded run (python -m train.replay) instead of training. For benchmarks
    # and tests of the tuner itself; see train/replay.py for what a replay cannot do.
    replay: OptionalPath = None
    # The devices a worker trains on, one trainer per device at once: "0,1,2,3" (CUDA device
    # indices), "auto" (every visible CUDA device, else one CPU trainer) or "cpu:N" (N CPU
    # trainers). null: one trainer, on whatever device the environment gives it.
    devices: str | None = None

    @field_validator("devices")
    @classmethod
    def _devices_spec(cls, spec: str | None) -> str | None:
        if spec is not None and not DEVICES_SPEC.fullmatch(spec.replace(" ", "")):
            raise ValueError(f"{spec!r} is not a device list: write CUDA indices (0,1,2,3), "
                             "auto, or cpu:N")
        return None if spec is None else spec.replace(" ", "")

    @field_validator("replay")
    @classmethod
    def _replay_draws_nothing(cls, table: Path | None, info: ValidationInfo) -> Path | None:
        artifacts = (info.data.get("hparams") or {}).get("artifacts", HParams().artifacts)
        if table is not None and artifacts != "none":
            raise ValueError("a replayed run has no model to draw plots or audio from; "
                             "set trainer.hparams.artifacts: none")
        return table

    @field_validator("ignore_layers")
    @classmethod
    def _ignore_needs_warm_start(cls, names: list[str], info: ValidationInfo) -> list[str]:
        if names and info.data.get("warm_start") is None:
            raise ValueError("needs trainer.warm_start")
        return names

    @field_validator("python", mode="before")
    @classmethod
    def _default_python(cls, python: Any) -> Any:
        return sys.executable if python is None else python

    @field_validator("hparams")
    @classmethod
    def _valid_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """Check keys and values as the trainer will; keep the values as it parses them."""
        if problems := unknown_keys(hparams, HParams.keys()):
            raise custom_errors(problems)
        parsed = HParams.from_overrides(hparams)  # an HParamsError is reported at this key
        return {key: getattr(parsed, key) for key in hparams}


class SamplerConfig(Section):
    type: Literal["tpe", "random", "cmaes", "gp"] = "tpe"
    n_startup_trials: int = Field(10, ge=0)  # random trials before the model-based sampler


class PrunerConfig(Section):
    type: Literal["median", "percentile", "successive_halving", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0)  # trials that finish before any is pruned
    n_warmup_steps: int = Field(2, ge=0)    # validations of a trial before it may be pruned
    percentile: float = Field(50.0, ge=0, le=100)
    # successive_halving, hyperband: 1 in reduction_factor trials goes on at each rung; the
    # first rung is at n_warmup_steps validations (at least 1)
    reduction_factor: int = Field(3, ge=2)
    patience: int | None = Field(None, ge=0)  # wrap in optuna's PatientPruner when set
    # What each validation reports to the pruner: null, the objective; or a loss of the
    # validation event (the study minimising), e.g. train_loss, which averages a whole
    # epoch's steps where a small validation set is noisy. The trial's value stays the
    # objective.
    metric: Literal["train_loss", "val_loss", "val_mel_loss", "val_gate_loss"] | None = None


class AdaptationConfig(Section):
    """How an ``adapt`` decision corrects the hyperparameters before the restart."""

    learning_rate_factor: float = Field(0.5, gt=0, le=1)
    dropout_increase: float = Field(0.1, ge=0, lt=1)
    weight_decay_factor: float = Field(10.0, ge=1)


class ConfirmConfig(Section):
    """Once the budget is spent, the top_k configurations train again with ``seeds`` more
    training seeds each, and the champion is the one with the best mean."""

    top_k: int = Field(2, ge=1)
    seeds: int = Field(2, ge=1)


class OptimizationConfig(Section):
    # Checks across fields are field validators that read the fields declared before them
    # (info.data): unlike a model validator, they run when another field is invalid too,
    # so every problem of the file is reported at once.
    objective_metric: ObjectiveMetric = "val_loss"
    direction: Direction = Field("minimize", validate_default=True)
    n_trials: int = Field(20, ge=1)
    # objective = metric + overfitting_penalty * max(0, val_loss - train_loss)
    overfitting_penalty: float = Field(0.1, ge=0)
    seed: int | None = None
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    max_adaptations: int = Field(2, ge=0)  # restarts with adapted hparams per trial
    adaptation: AdaptationConfig = Field(default_factory=AdaptationConfig)
    # Each running trial beats every heartbeat_interval_s; one silent for heartbeat_grace_s
    # (None: twice the interval) lost its worker, and is retried up to max_retries times.
    heartbeat_interval_s: int = Field(60, ge=1)
    heartbeat_grace_s: int | None = Field(None, ge=1)
    max_retries: int = Field(1, ge=0)
    confirm: ConfirmConfig | None = None  # None: the champion is the best single trial

    @property
    def listened(self) -> bool:
        """Whether the trial's value is its listening evaluation's (measured at its end)."""
        return self.objective_metric in LISTENED_OBJECTIVES

    @property
    def training_metric(self) -> str:
        """The metric each validation is judged by (reported, early-stopped, pruned)."""
        metric = self.objective_metric
        return metric if metric in ValidationObjective.__args__ else TRAINING_PROXY

    @field_validator("direction")
    @classmethod
    def _direction_suits_metric(cls, direction: Direction, info: ValidationInfo) -> Direction:
        metric = info.data.get("objective_metric")  # absent when invalid (reported itself)
        expected = "maximize" if metric in HIGHER_IS_BETTER else "minimize"
        if metric is not None and direction != expected:
            raise ValueError(f"{metric} is better when "
                             f"{'higher' if expected == 'maximize' else 'lower'}; "
                             f"use {expected}")
        return direction

    @field_validator("pruner")
    @classmethod
    def _pruned_loss_is_minimised(cls, pruner: PrunerConfig, info: ValidationInfo
                                  ) -> PrunerConfig:
        if pruner.metric is not None and info.data.get("direction") == "maximize":
            raise ValueError(f"metric: {pruner.metric} is a loss, lower is better, and the "
                             "study maximises; leave metric null to prune on the objective")
        return pruner

    @field_validator("heartbeat_grace_s")
    @classmethod
    def _grace_outlasts_a_heartbeat(cls, grace: int | None, info: ValidationInfo) -> int | None:
        # A grace no longer than the interval lets a live trial look dead between two of its
        # beats: another worker then fails it and trains the same trial at the same time.
        interval = info.data.get("heartbeat_interval_s")
        if grace is not None and interval is not None and grace <= interval:
            raise ValueError(f"{grace} must be longer than heartbeat_interval_s ({interval}), "
                             "or a live trial is taken for a dead one; twice the interval or "
                             "more is safe")
        return grace


class MlflowConfig(Section):
    enabled: bool = True                # track studies in MLflow and register the best models
    tracking_uri: DatabaseUrl = None    # None: sqlite:///<state_dir>/mlflow.db
    experiment_name: str | None = None  # None: the config's experiment_name


class RegistryConfig(Section):
    model_name: str | None = None  # None: the config's experiment_name
    keep_top_k: int = Field(3, ge=1)  # best checkpoints kept on disk
    # {metric: "<= 1.5", ...} on the listening evaluation's metrics: a version that fails one
    # is not registered as a new best, and promote refuses it (see config/smart_tuner.yaml).
    requirements: Requirements = Field(default_factory=dict)

    @property
    def parsed_requirements(self) -> list[Requirement]:
        return parse_requirements(self.requirements)


class NotificationsConfig(Section):
    training_start: bool = True
    trial_complete: bool = True
    early_stop: bool = True
    training_complete: bool = True
    error_alerts: bool = True
    restarts: bool = True
    optimization_updates: bool = True
    anomalies: bool = True
    metrics_summary: bool = False


class TelegramConfig(Section):
    enabled: bool = False
    bot_token: SecretStr | None = None
    chat_id: int | None = None
    allowed_users: list[int] = Field(default_factory=list)
    allow_everyone: bool = False
    max_trials_per_study: int = Field(200, ge=1)
    summary_interval_min: float = Field(30.0, gt=0)
    poll_interval_s: float = Field(5.0, gt=0)
    # /tune starts a worker beside the bot; false where standing workers (worker --follow)
    # train every study and the bot's machine has no GPU (deploy/).
    start_worker: bool = True
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)

    @field_validator("allowed_users", mode="before")
    @classmethod
    def _split_user_list(cls, users: Any) -> Any:
        # "123, 456" as TELEGRAM_ALLOWED_USERS holds them
        if isinstance(users, str):
            return [user.strip() for user in users.split(",") if user.strip()]
        return users


# Entries validated by the class that their ``type`` names, and dumped with its fields.
SearchSpace = Annotated[
    dict[str, Annotated[SerializeAsAny[SearchRange], _by_type(SEARCH_RANGE_TYPES, "search range")]],
    BeforeValidator(null_as_empty)]
EarlyStopping = Annotated[
    dict[str, Annotated[SerializeAsAny[Criterion], _by_type(CRITERIA, "criterion")]],
    BeforeValidator(null_as_empty)]


class Config(Section):
    """The whole config; see ``config/smart_tuner.yaml`` for every setting explained."""

    experiment_name: str = Field("tacotron2_smart_tuning", min_length=1)
    dataset_path: AbsolutePath  # an LJSpeech folder or a path|text filelist
    checkpoint_dir: OptionalPath = None  # None: <state_dir>/runs
    state_dir: AbsolutePath = Field(Path(".state"), validate_default=True)
    storage: DatabaseUrl = None  # None: sqlite:///<state_dir>/optuna.db
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    hyperparameter_search_space: SearchSpace = Field(default_factory=dict)
    optimization: OptimizationConfig = Field(default_factory=OptimizationConfig)
    early_stopping: EarlyStopping = Field(default_factory=dict)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)

    _evaluation_measures_what_is_asked = field_validator("evaluation")(evaluation_measures_asked)

    @field_validator("storage")
    @classmethod
    def _supported_storage(cls, url: str | None) -> str | None:
        """SQLite (one machine) or PostgreSQL (several): the databases whose locks
        :mod:`tuner_core.storage.budget_lock` knows. A plain ``postgresql://`` gets the psycopg
        driver; SQLAlchemy's default for it, psycopg2, is not installed."""
        if url is None or url.startswith(("sqlite:///", "postgresql+psycopg://")):
            return url
        if url.startswith("postgresql://"):
            return url.replace("postgresql://", "postgresql+psycopg://", 1)
        raise ValueError(f"{url.split(':', 1)[0]!r} storage is not supported; use "
                         "sqlite:///PATH (one machine) or postgresql://USER:PASSWORD@HOST/DB")

    @model_validator(mode="after")
    def _fill_derived_defaults(self) -> Self:
        self.checkpoint_dir = self.checkpoint_dir or self.state_dir / "runs"
        self.storage = self.storage or f"sqlite:///{self.state_dir / 'optuna.db'}"
        self.mlflow.tracking_uri = (self.mlflow.tracking_uri
                                    or f"sqlite:///{self.state_dir / 'mlflow.db'}")
        self.mlflow.experiment_name = self.mlflow.experiment_name or self.experiment_name
        self.registry.model_name = self.registry.model_name or self.experiment_name
        return self

    @field_validator("hyperparameter_search_space")
    @classmethod
    def _check_search_space(cls, search_space: dict[str, SearchRange], info: ValidationInfo,
                            ) -> dict[str, SearchRange]:
        """Every searched name is a free trainer hyperparameter and every bound a valid value.

        Categorical choices are replaced by the values the trainer parses them to, so
        ``1e-3`` written in YAML (a string to PyYAML) is sampled as the float 0.001.
        Bounds are checked with the fixed hyperparameters, or, when ``trainer`` is invalid
        (reported on its own), with the trainer's defaults.
        """
        trainer = info.data.get("trainer") or TrainerConfig()
        fixed = HParams.from_overrides(trainer.hparams)
        hparam_names = HParams.keys()
        problems: list[tuple[Loc, str]] = []
        for name, space in search_space.items():
            loc: Loc = (name,)
            if name not in hparam_names:
                problems.append((loc, unknown_key(name, hparam_names)))
                continue
            if name in trainer.hparams:
                problems.append((loc, "also fixed in trainer.hparams; set it in one place"))
                continue
            if isinstance(space, FloatRange) and type(getattr(fixed, name)) is int:
                problems.append(((*loc, "type"), f"{name} is an integer; use type: int"))
                continue
            parsed: list[Any] = []
            for where, value in _bounds(space):
                try:
                    parsed.append(getattr(HParams.from_overrides({name: value}, base=fixed), name))
                except HParamsError as error:
                    problems.append(((*loc, *where), str(error)))
            if isinstance(space, Categorical) and len(parsed) == len(space.choices):  # all valid
                search_space[name] = space.model_copy(update={"choices": parsed})
        if problems:
            raise custom_errors(problems)
        return search_space

    @property
    def storage_url(self) -> str:
        """The Optuna storage: ``storage``, else ``$SMART_TUNER_STORAGE``, else SQLite."""
        return str(self.storage)

    @property
    def storage_shown(self) -> str:
        """The storage URL with its password hidden: for messages and logs."""
        return sqlalchemy.engine.make_url(self.storage_url).render_as_string(hide_password=True)

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI: the configured one, else SQLite in ``state_dir``."""
        return str(self.mlflow.tracking_uri)

    @property
    def fixed_hparams(self) -> dict[str, Any]:
        """The trainer hyperparameters every trial gets (a copy)."""
        return dict(self.trainer.hparams)

    def to_dict(self) -> dict[str, Any]:
        """The effective config as JSON-able data, the bot token masked (for logging)."""
        return self.model_dump(mode="json")


def _bounds(space: SearchRange) -> list[tuple[Loc, Any]]:
    """The values of ``space`` to check against the trainer, each with its key path."""
    if isinstance(space, Categorical):
        return [(("choices", index), choice) for index, choice in enumerate(space.choices)]
    return [(("min",), space.min), (("max",), space.max)]

