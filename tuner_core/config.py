"""The Smart Tuner YAML config: loading, environment variables and validation.

    config = load_config("config/smart_tuner.yaml")

Loading goes in four steps, and a :class:`ConfigError` after any of them lists every
problem found as ``key.path: what is wrong``:

1. read the YAML file (a syntax error names the file and line);
2. expand ``${VAR}`` and ``${VAR:-default}`` in string values from the environment;
3. fill settings the file leaves out from :data:`ENVIRONMENT_DEFAULTS` (secrets, URLs);
4. validate with the pydantic models below, which also check the search space against
   the trainer's hyperparameters, so that a bad range fails here and not in trial 17.

Every block rejects unknown keys, suggesting the closest valid one. Relative paths are
resolved against the current working directory. Defaults that depend on other settings
(``checkpoint_dir``, ``storage``, the MLflow URI and names) are filled in by validation,
so a loaded config holds the effective values; :meth:`Config.to_dict` gives them as plain
data, with the bot token masked, for logging.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

import sqlalchemy
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainValidator,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from train.hparams import HParams, HParamsError, unknown_key_message
from tuner_core.early_stop import CRITERIA, HIGHER_IS_BETTER, Criterion, Direction
from tuner_core.search_space import SEARCH_RANGE_TYPES, Categorical, FloatRange, SearchRange

# The config the command lines read when not told (--config).
CONFIG_VARIABLE = "SMART_TUNER_CONFIG"
DEFAULT_CONFIG = Path("config/smart_tuner.yaml")
CONFIG_HELP = (f"the YAML config (default: ${CONFIG_VARIABLE}, else {DEFAULT_CONFIG}; "
               "the demo's is config/demo.yaml)")


def default_config_path() -> Path:
    return Path(os.environ.get(CONFIG_VARIABLE) or DEFAULT_CONFIG)


# Settings taken from the environment when the file leaves them out (or null or empty).
ENVIRONMENT_DEFAULTS: dict[tuple[str, ...], str] = {
    ("storage",): "SMART_TUNER_STORAGE",
    ("mlflow", "tracking_uri"): "MLFLOW_TRACKING_URI",
    ("telegram", "bot_token"): "TELEGRAM_BOT_TOKEN",
    ("telegram", "chat_id"): "TELEGRAM_CHAT_ID",
    ("telegram", "allowed_users"): "TELEGRAM_ALLOWED_USERS",
}

# Numeric fields of the trainer's validation event that measure quality
# (lr, grad_norm and seconds are reported too, but optimising them makes no sense).
ObjectiveMetric = Literal["val_loss", "val_mel_loss", "val_gate_loss", "train_loss",
                          "alignment_score"]

Loc = tuple[str | int, ...]
Model = TypeVar("Model", bound=BaseModel)


class ConfigError(ValueError):
    """A config that cannot be used; ``problems`` holds one ``key.path: what is wrong`` each."""

    def __init__(self, source: str | Path, problems: list[str]):
        self.source = str(source)
        self.problems = problems
        super().__init__("\n  ".join([f"{source}:", *problems]))


# --- Validation helpers -------------------------------------------------------------------

def _problems(problems: list[tuple[Loc, str]]) -> ValidationError:
    """A ValidationError carrying our own messages at their key paths.

    Raised inside a validator, pydantic merges it into the error being built, with each
    path prefixed by the validator's own position, as it does for a nested model.
    """
    return ValidationError.from_exception_data("Config", [
        {"type": PydanticCustomError("config", "{problem}", {"problem": message}),
         "loc": loc, "input": None}
        for loc, message in problems])


def _unknown_key(key: str, valid: Collection[str]) -> str:
    """``"unknown key; did you mean <closest>?"``; the caller puts ``key`` in the path."""
    return unknown_key_message(key, list(valid)).removeprefix(f"{key}: ")


def _unknown_keys(data: Mapping[Any, Any], valid: Collection[str]) -> list[tuple[Loc, str]]:
    return [((str(key),), _unknown_key(str(key), valid)) for key in data if key not in valid]


def _validate_known_keys(data: Any, valid: Collection[str], validate: Callable[[Any], Model],
                         ) -> Model:
    """``validate(data)``, reporting the unknown keys of ``data`` along with its other errors."""
    if not isinstance(data, Mapping) or not (problems := _unknown_keys(data, valid)):
        return validate(data)
    try:
        validate({key: value for key, value in data.items() if key in valid})
    except ValidationError as error:
        problems += [(detail["loc"], _message(detail)) for detail in error.errors()]
    raise _problems(problems)


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
            raise _problems([(("type",), f"{problem}; expected one of {', '.join(kinds)}")])
        model = kinds[kind]
        return _validate_known_keys(entry, model.model_fields, model.model_validate)

    return PlainValidator(validate)


def _null_as_empty(value: Any) -> Any:
    # A YAML block whose entries are all commented out reads as null.
    return {} if value is None else value


def _absolute(path: Path) -> Path:
    return path.expanduser().resolve()


AbsolutePath = Annotated[Path, AfterValidator(_absolute)]


class _Section(BaseModel):
    """A block of the config: unknown keys are errors that suggest the closest valid key."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _known_keys_only(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        return _validate_known_keys(_null_as_empty(data), cls.model_fields, handler)


# --- The blocks ---------------------------------------------------------------------------

class TrainerConfig(_Section):
    """How trials launch ``python -m train``."""

    python: str = Field(default_factory=lambda: sys.executable)
    hparams: Annotated[dict[str, Any], BeforeValidator(_null_as_empty)] = Field(
        default_factory=dict)  # fixed for every trial
    grace_period_s: float = Field(30.0, gt=0)  # between SIGTERM and SIGKILL
    # Torch threads of each trainer; null: this machine's cores divided by the trainers
    # working on it.
    threads: int | None = Field(None, ge=1)
    # Start trainers by forking a process that has imported the trainer (train.launcher)
    # rather than each as its own python -m train: seconds less per trial and restart.
    preload: bool = True
    # With artifacts=end, also draw a trial's plots and sample (in the background, from its
    # best checkpoint) each time it beats the study's best completed trial.
    render_new_best: bool = True
    # Every trial starts from this checkpoint's model weights (python -m train --warm-start),
    # this project's or NVIDIA's; ignore_layers keep their fresh initialisation.
    warm_start: AbsolutePath | None = None
    ignore_layers: list[str] = Field(default_factory=list)

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
        if problems := _unknown_keys(hparams, HParams.keys()):
            raise _problems(problems)
        parsed = HParams.from_overrides(hparams)  # an HParamsError is reported at this key
        return {key: getattr(parsed, key) for key in hparams}


class SamplerConfig(_Section):
    type: Literal["tpe", "random", "cmaes", "gp"] = "tpe"
    n_startup_trials: int = Field(10, ge=0)  # random trials before the model-based sampler


class PrunerConfig(_Section):
    type: Literal["median", "percentile", "successive_halving", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0)  # trials that finish before any is pruned
    n_warmup_steps: int = Field(2, ge=0)    # validations of a trial before it may be pruned
    percentile: float = Field(50.0, ge=0, le=100)
    # successive_halving, hyperband: 1 in reduction_factor trials goes on at each rung; the
    # first rung is at n_warmup_steps validations (at least 1)
    reduction_factor: int = Field(3, ge=2)
    patience: int | None = Field(None, ge=0)  # wrap in optuna's PatientPruner when set


class AdaptationConfig(_Section):
    """How an ``adapt`` decision corrects the hyperparameters before the restart."""

    learning_rate_factor: float = Field(0.5, gt=0, le=1)
    dropout_increase: float = Field(0.1, ge=0, lt=1)
    weight_decay_factor: float = Field(10.0, ge=1)


class OptimizationConfig(_Section):
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


class MlflowConfig(_Section):
    enabled: bool = True                # track studies in MLflow and register the best models
    tracking_uri: str | None = None     # None: sqlite:///<state_dir>/mlflow.db
    experiment_name: str | None = None  # None: the config's experiment_name


class RegistryConfig(_Section):
    model_name: str | None = None  # None: the config's experiment_name
    keep_top_k: int = Field(3, ge=1)  # best checkpoints kept on disk


class NotificationsConfig(_Section):
    training_start: bool = True
    trial_complete: bool = True
    early_stop: bool = True
    training_complete: bool = True
    error_alerts: bool = True
    restarts: bool = True
    optimization_updates: bool = True
    anomalies: bool = True
    metrics_summary: bool = False


class TelegramConfig(_Section):
    enabled: bool = False
    bot_token: SecretStr | None = None
    chat_id: int | None = None
    allowed_users: list[int] = Field(default_factory=list)
    allow_everyone: bool = False
    max_trials_per_study: int = Field(200, ge=1)
    summary_interval_min: float = Field(30.0, gt=0)
    poll_interval_s: float = Field(5.0, gt=0)
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
    BeforeValidator(_null_as_empty)]
EarlyStopping = Annotated[
    dict[str, Annotated[SerializeAsAny[Criterion], _by_type(CRITERIA, "criterion")]],
    BeforeValidator(_null_as_empty)]


class Config(_Section):
    """The whole config; see ``config/smart_tuner.yaml`` for every setting explained."""

    experiment_name: str = Field("tacotron2_smart_tuning", min_length=1)
    dataset_path: AbsolutePath  # an LJSpeech folder or a path|text filelist
    checkpoint_dir: AbsolutePath | None = None  # None: <state_dir>/runs
    state_dir: AbsolutePath = Field(Path(".state"), validate_default=True)
    storage: str | None = None  # None: sqlite:///<state_dir>/optuna.db
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    hyperparameter_search_space: SearchSpace = Field(default_factory=dict)
    optimization: OptimizationConfig = Field(default_factory=OptimizationConfig)
    early_stopping: EarlyStopping = Field(default_factory=dict)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)

    @field_validator("storage")
    @classmethod
    def _supported_storage(cls, url: str | None) -> str | None:
        """SQLite (one machine) or PostgreSQL (several): the databases whose locks
        :mod:`tuner_core.budget_lock` knows. A plain ``postgresql://`` gets the psycopg
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
                problems.append((loc, _unknown_key(name, hparam_names)))
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
            raise _problems(problems)
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


# --- Loading ------------------------------------------------------------------------------

def load_config(path: str | Path, environ: Mapping[str, str] | None = None,
                overrides: Sequence[str] = ()) -> Config:
    """Read, expand and validate the YAML config at ``path``.

    ``environ`` (default ``os.environ``) supplies ``${VAR}`` references and
    :data:`ENVIRONMENT_DEFAULTS`. ``overrides`` are ``key.path=value`` settings (a
    command line's ``--set``) that replace the file's, the value read as YAML.
    Raises :class:`ConfigError` listing every problem.
    """
    environ = os.environ if environ is None else environ
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(path, [f"cannot read the file: {error.strerror or error}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or error
        raise ConfigError(path, [f"{where}invalid YAML: {problem}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, [f"expected a mapping of settings, got {type(data).__name__}"])

    problems: list[str] = []
    data = _expand_references(data, environ, (), problems)
    for override in overrides:
        _apply_override(data, override, problems)
    if problems:
        raise ConfigError(path, problems)
    _apply_environment_defaults(data, environ)
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(path, [_problem_line(detail) for detail in error.errors()]) from None


_REFERENCE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def _expand_references(node: Any, environ: Mapping[str, str], loc: Loc,
                       problems: list[str]) -> Any:
    """``node`` with ``${VAR}`` / ``${VAR:-default}`` in its strings replaced, as a shell does.

    A variable that is unset, and has no default, is added to ``problems``.
    """
    if isinstance(node, dict):
        return {key: _expand_references(value, environ, (*loc, key), problems)
                for key, value in node.items()}
    if isinstance(node, list):
        return [_expand_references(item, environ, (*loc, index), problems)
                for index, item in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(reference: re.Match[str]) -> str:
        name, default = reference["name"], reference["default"]
        value = environ.get(name)
        if value:
            return value
        if default is not None:  # as in the shell, ":-" also replaces an empty value
            return default
        if value is None:
            problems.append(f"{_dotted(loc)}: environment variable {name} is not set "
                            f"(or write ${{{name}:-default}})")
        return ""

    return _REFERENCE.sub(substitute, node)


def _apply_environment_defaults(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Fill settings missing from ``data`` from :data:`ENVIRONMENT_DEFAULTS`, in place."""
    for (*sections, key), variable in ENVIRONMENT_DEFAULTS.items():
        value = environ.get(variable)
        block = _block(data, sections) if value else None
        if block is not None and block.get(key) in (None, ""):
            block[key] = value


def _apply_override(data: dict[str, Any], override: str, problems: list[str]) -> None:
    """Set ``key.path=value`` in ``data``, the value read as YAML; or add a problem."""
    dotted, _, text = override.partition("=")
    *sections, key = dotted.strip().split(".")
    if "=" not in override or not all([*sections, key]):
        problems.append(f"--set {override}: expected KEY.PATH=VALUE, e.g. "
                        "optimization.n_trials=10")
        return
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problems.append(f"{dotted}: --set value {text!r} is not valid YAML: "
                        f"{getattr(error, 'problem', None) or error}")
        return
    block = _block(data, sections)
    if block is None:
        problems.append(f"{dotted}: --set cannot set it, {'.'.join(sections)} is not a block "
                        "of settings")
        return
    block[key] = value


def _block(data: dict[str, Any], sections: Sequence[str]) -> dict[str, Any] | None:
    """The block ``data[s1][s2]...``, created where missing or null; None where a
    setting that is not a block is in the way (validation reports the malformed one)."""
    block = data
    for section in sections:
        if block.get(section) is None:
            block[section] = {}
        block = block[section]
        if not isinstance(block, dict):
            return None
    return block


# --- Error messages -----------------------------------------------------------------------

_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "path_type": "a path", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping",
}
_COMPARISONS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
                "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}


def _problem_line(error: ErrorDetails) -> str:
    """One pydantic error as ``key.path: what is wrong``."""
    path = _dotted(error["loc"])
    return f"{path}: {_message(error)}" if path else _message(error)


def _message(error: ErrorDetails) -> str:
    """What is wrong, in words, without the key path."""
    kind, context, given = error["type"], error.get("ctx", {}), error.get("input")
    if kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, got {given!r}"
    elif kind == "missing":
        message = "required, but missing"
    elif kind in ("literal_error", "enum"):
        message = f"expected {context['expected']}, got {given!r}"
    elif kind in _COMPARISONS:
        bound, operator = _COMPARISONS[kind]
        message = f"must be {operator} {context[bound]:g}, got {given!r}"
    elif kind == "value_error":
        message = str(context["error"])
    else:  # our own problems, and rarer pydantic errors, which read well as they are
        message = error["msg"]
    return message


def _dotted(loc: Loc) -> str:
    return ".".join(str(part) for part in loc)
