"""Loading and validating the YAML config."""

import json
from pathlib import Path

import pytest
import yaml

from tuner_core.config import Config, ConfigError, load_config
from tuner_core.config.location import default_config_path
from tuner_core.config.starter import SHIPPED_CONFIG, write_starter
from tuner_core.rules.early_stop import Alignment, Divergence, Overfitting, Patience, Plateau
from tuner_core.rules.search_space import Categorical, FloatRange, IntRange

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "config"


def write(tmp_path: Path, settings: dict | str) -> Path:
    """A config file holding ``settings`` (YAML text, or data to dump as YAML)."""
    path = tmp_path / "config.yaml"
    text = settings if isinstance(settings, str) else yaml.safe_dump(settings, sort_keys=False)
    path.write_text(text)
    return path


def problems(tmp_path: Path, settings: dict | str, environ: dict | None = None) -> list[str]:
    """The problems load_config reports for ``settings``."""
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, settings), environ=environ or {})
    assert str(error.value).startswith(f"{tmp_path / 'config.yaml'}:")
    return error.value.problems


def load(tmp_path: Path, settings: dict, environ: dict | None = None) -> Config:
    return load_config(write(tmp_path, settings), environ=environ or {})


# --- the shipped configs ----------------------------------------------------------------

def test_full_size_config_loads_with_every_criterion():
    config = load_config(CONFIG_DIR / "smart_tuner.yaml", environ={})
    assert config.dataset_path == ROOT / "data" / "LJSpeech-1.1"
    assert config.state_dir == ROOT / ".state"
    assert config.fixed_hparams["epochs"] == 100
    assert set(config.hyperparameter_search_space) >= {
        "learning_rate", "batch_size", "weight_decay", "p_attention_dropout",
        "p_decoder_dropout", "warmup_steps", "lr_schedule", "grad_clip_thresh"}
    assert config.hyperparameter_search_space["batch_size"].choices == [32, 48, 64]
    kinds = {type(criterion) for criterion in config.early_stopping.values()}
    assert kinds == {Patience, Overfitting, Divergence, Plateau, Alignment}
    assert config.telegram.bot_token is None


def test_demo_config_loads_the_tiny_cpu_profile():
    config = load_config(CONFIG_DIR / "demo.yaml", environ={})
    assert config.state_dir == ROOT / ".state" / "demo"
    assert config.dataset_path == ROOT / ".state" / "demo_corpus"
    assert config.optimization.n_trials == 4
    assert config.fixed_hparams["n_frames_per_step"] == 3
    # The criteria and pruner the replayed demo curves chose (README: "Does pruning pay?").
    assert set(config.early_stopping) == {"divergence", "alignment", "overfitting"}
    assert config.fixed_hparams["batch_size"] == 8 and config.trainer.threads == 1
    assert "guided_attention_weight" in config.hyperparameter_search_space
    assert config.optimization.pruner.type == "successive_halving"
    assert config.optimization.pruner.metric == "train_loss"


def test_dataset_path_from_the_environment_in_the_full_size_config():
    config = load_config(CONFIG_DIR / "smart_tuner.yaml", environ={"SMART_TUNER_DATA": "/d/lj"})
    assert config.dataset_path == Path("/d/lj")


# --- defaults and derived values --------------------------------------------------------

def test_defaults_live_under_state_dir_and_paths_are_absolute(tmp_path):
    config = load(tmp_path, {"dataset_path": "corpus", "state_dir": "st"})
    assert config.dataset_path == tmp_path / "corpus"
    assert config.checkpoint_dir == tmp_path / "st" / "runs"
    assert config.storage_url == f"sqlite:///{tmp_path}/st/optuna.db"
    assert config.tracking_uri == f"sqlite:///{tmp_path}/st/mlflow.db"
    assert config.mlflow.experiment_name == config.registry.model_name == "tacotron2_smart_tuning"
    assert config.optimization.sampler.type == "tpe"
    assert config.optimization.pruner.type == "median"
    assert config.trainer.grace_period_s == 30.0
    assert config.hyperparameter_search_space == {} and config.early_stopping == {}


# --- where relative paths are taken from ------------------------------------------------

def test_relative_paths_in_the_file_are_taken_from_its_folder(tmp_path, monkeypatch):
    folder, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    folder.mkdir()
    path = write(folder, {
        "dataset_path": "${DATA}", "state_dir": "st", "checkpoint_dir": "../runs",
        "storage": "sqlite:///db/optuna.db?timeout=30",
        "trainer": {"python": "venv/bin/python", "warm_start": "~/w.pt", "replay": "c.json",
                    "hparams": {"artifacts": "none"}},
        "mlflow": {"tracking_uri": "sqlite:///ml.db"}})
    config = load_config(path, environ={"DATA": "corpus"})
    assert config.dataset_path == folder / "corpus"  # a ${VAR} in the file is the file's
    assert config.state_dir == folder / "st"
    assert config.checkpoint_dir == tmp_path / "runs"
    assert config.storage_url == f"sqlite:///{folder}/db/optuna.db?timeout=30"
    assert config.tracking_uri == f"sqlite:///{folder}/ml.db"
    assert config.trainer.python == str(folder / "venv" / "bin" / "python")
    assert config.trainer.warm_start == Path.home() / "w.pt"
    assert config.trainer.replay == folder / "c.json"
    assert list(elsewhere.iterdir()) == []
    # Left out, the state folder is beside the file; a program without a slash is on PATH.
    config = load_config(write(folder, {"dataset_path": "d", "trainer": {"python": "python3"}}),
                         environ={})
    assert config.state_dir == folder / ".state" and config.trainer.python == "python3"
    assert config.storage_url == f"sqlite:///{folder}/.state/optuna.db"


def test_paths_from_the_command_line_or_the_environment_are_the_working_folders(
        tmp_path, monkeypatch):
    folder, here = tmp_path / "project", tmp_path / "here"
    folder.mkdir()
    here.mkdir()
    monkeypatch.chdir(here)
    environ = {"SMART_TUNER_STORAGE": "sqlite:///o.db", "MLFLOW_TRACKING_URI": "sqlite:///m.db"}
    config = load_config(write(folder, {"dataset_path": "d", "state_dir": "st"}), environ,
                         overrides=["state_dir=mine", "trainer.warm_start=w.pt",
                                    "trainer.hparams.test_sentence=a/b"])
    assert config.dataset_path == folder / "d"
    assert config.state_dir == here / "mine" and config.trainer.warm_start == here / "w.pt"
    assert config.storage_url == f"sqlite:///{here}/o.db"
    assert config.tracking_uri == f"sqlite:///{here}/m.db"
    assert config.fixed_hparams == {"test_sentence": "a/b"}  # not a path: as it is


def test_the_default_config_is_the_one_init_writes_else_a_checkouts(tmp_path, monkeypatch):
    monkeypatch.delenv("SMART_TUNER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_config_path() == Path("smart_tuner.yaml")  # named when neither is there
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "smart_tuner.yaml").write_text("dataset_path: d\n")
    assert default_config_path() == Path("config/smart_tuner.yaml")
    write_starter(tmp_path)
    assert default_config_path() == Path("smart_tuner.yaml")
    monkeypatch.setenv("SMART_TUNER_CONFIG", "/etc/tuner.yaml")
    assert default_config_path() == Path("/etc/tuner.yaml")


def test_the_starter_config_is_the_shipped_one_with_its_paths_beside_it(tmp_path):
    assert SHIPPED_CONFIG.read_text() == (CONFIG_DIR / "smart_tuner.yaml").read_text()
    path = write_starter(tmp_path / "new")
    assert "../" not in path.read_text()
    config = load_config(path, environ={})
    assert config.state_dir == tmp_path / "new" / ".state"
    assert config.dataset_path == tmp_path / "new" / "data" / "LJSpeech-1.1"
    shipped = load_config(SHIPPED_CONFIG, environ={}).to_dict()
    starter = config.to_dict()
    different = {key for key in shipped if shipped[key] != starter[key]}
    assert different == {"dataset_path", "state_dir", "checkpoint_dir", "storage", "mlflow"}
    path.write_text("mine")
    with pytest.raises(FileExistsError):
        write_starter(tmp_path / "new")
    assert path.read_text() == "mine"


def test_storage_and_tracking_uri_from_the_environment(tmp_path):
    environ = {"SMART_TUNER_STORAGE": "postgresql://db/optuna",
               "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    config = load(tmp_path, {"dataset_path": "d"}, environ)
    assert config.storage_url == "postgresql+psycopg://db/optuna"  # the installed driver
    assert config.tracking_uri == "http://mlflow:5000"
    # a value in the file wins over the environment
    config = load(tmp_path, {"dataset_path": "d", "storage": "sqlite:////x.db"}, environ)
    assert config.storage_url == "sqlite:////x.db"


def test_the_storage_password_is_never_shown(tmp_path):
    config = load(tmp_path, {"dataset_path": "d", "storage": "postgresql://tuner:s3cret@db/st"}, {})
    assert config.storage_shown == "postgresql+psycopg://tuner:***@db/st"


def test_an_unsupported_storage_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"storage.*'mysql' storage is not supported"):
        load(tmp_path, {"dataset_path": "d", "storage": "mysql://db/optuna"}, {})


def test_blocks_with_every_entry_commented_out_are_empty(tmp_path):
    text = "dataset_path: d\ntelegram:\n  # enabled: true\nearly_stopping:\n  # wait: ...\n"
    config = load_config(write(tmp_path, text), environ={})
    assert config.early_stopping == {} and config.telegram.enabled is False


def test_fixed_hparams_are_parsed_as_the_trainer_parses_them(tmp_path):
    config = load(tmp_path, {"dataset_path": "d", "trainer": {"hparams": {
        "learning_rate": "1e-3", "epochs": 10.0, "amp": "yes"}}})
    assert config.fixed_hparams == {"learning_rate": 0.001, "epochs": 10, "amp": True}


# --- environment variables --------------------------------------------------------------

def test_environment_references_are_expanded(tmp_path):
    text = ("dataset_path: ${DATA}/lj\n"
            "experiment_name: run_${NAME:-default}\n"
            "optimization: {n_trials: '${TRIALS:-7}'}\n")
    config = load_config(write(tmp_path, text), environ={"DATA": "/data"})
    assert config.dataset_path == Path("/data/lj")
    assert config.experiment_name == "run_default"
    assert config.optimization.n_trials == 7


def test_unset_environment_variable_names_key_and_variable(tmp_path):
    assert problems(tmp_path, "dataset_path: d\nstorage: ${DB_URL}\n") == [
        "storage: environment variable DB_URL is not set (or write ${DB_URL:-default})"]


def test_bot_token_is_secret_everywhere(tmp_path):
    environ = {"TELEGRAM_BOT_TOKEN": "123:SECRET", "TELEGRAM_CHAT_ID": "-100",
               "TELEGRAM_ALLOWED_USERS": "7, 8"}
    config = load(tmp_path, {"dataset_path": "d", "telegram": {"enabled": True}}, environ)
    assert config.telegram.bot_token.get_secret_value() == "123:SECRET"
    assert (config.telegram.chat_id, config.telegram.allowed_users) == (-100, [7, 8])
    dumped = config.to_dict()
    for text in (repr(config), str(config), json.dumps(dumped), str(config.model_dump())):
        assert "SECRET" not in text
    assert dumped["telegram"]["bot_token"] == "**********"


# --- error messages ---------------------------------------------------------------------

def test_unknown_key_suggests_the_closest(tmp_path):
    found = problems(tmp_path, {"dataset_path": "d", "optimization": {"n_trails": 5}})
    assert found == ["optimization.n_trails: unknown key; did you mean n_trials?"]
    with pytest.raises(ConfigError, match=r"optimization\.n_trails: unknown key; did you mean"):
        load_config(write(tmp_path, {"dataset_path": "d", "optimization": {"n_trails": 5}}))


def test_wrong_type_names_key_and_value(tmp_path):
    assert problems(tmp_path, {"dataset_path": "d", "optimization": {"n_trials": "abc"}}) == [
        "optimization.n_trials: expected an integer, got 'abc'"]


def test_nested_and_list_paths(tmp_path):
    found = problems(tmp_path, {
        "dataset_path": "d",
        "optimization": {"pruner": {"percentile": 150}, "direction": "minimise"},
        "telegram": {"allowed_users": [1, "bob"]},
    })
    assert found == [
        "optimization.direction: expected 'minimize' or 'maximize', got 'minimise'",
        "optimization.pruner.percentile: must be <= 100, got 150",
        "telegram.allowed_users.1: expected an integer, got 'bob'",
    ]


def test_every_problem_is_listed_at_once(tmp_path):
    found = problems(tmp_path, {
        "optimization": {"n_trails": 5, "n_trials": 0},
        "early_stopping": {"wait": {"type": "patience", "patiense": 3, "min_delta": "x"}},
    })
    assert found == [
        "dataset_path: required, but missing",
        "optimization.n_trails: unknown key; did you mean n_trials?",
        "optimization.n_trials: must be >= 1, got 0",
        "early_stopping.wait.patiense: unknown key; did you mean patience?",
        "early_stopping.wait.min_delta: expected a number, got 'x'",
    ]


def test_an_unknown_key_or_a_bad_block_hides_no_other_problem(tmp_path):
    # Checks across fields (search space against the trainer, direction against the
    # metric, heartbeat grace against its interval) run although other fields are invalid.
    found = problems(tmp_path, {
        "dataset_path": "d",
        "trainer": {"hparams": {"epochs": 0}},
        "hyperparameter_search_space": {
            "p_decoder_dropout": {"type": "float", "min": 0.0, "max": 1.5}},
        "optimization": {"n_trails": 3, "objective_metric": "alignment_score",
                         "heartbeat_interval_s": 10, "heartbeat_grace_s": 5},
    })
    assert found == [
        "trainer.hparams: epochs=0: must be >= 1",
        "hyperparameter_search_space.p_decoder_dropout.max: p_decoder_dropout=1.5: "
        "must be <= 0.99",
        "optimization.n_trails: unknown key; did you mean n_trials?",
        "optimization.direction: alignment_score is better when higher; use maximize",
        "optimization.heartbeat_grace_s: 5 must be longer than heartbeat_interval_s (10), or "
        "a live trial is taken for a dead one; twice the interval or more is safe",
    ]


# --- overrides (--set) ------------------------------------------------------------------

def test_overrides_replace_settings_with_typed_values(tmp_path):
    path = write(tmp_path, {"dataset_path": "d", "optimization": {"n_trials": 4}})
    config = load_config(path, environ={}, overrides=[
        "optimization.n_trials=10", "optimization.pruner.type=none", "optimization.seed=null",
        "telegram.allowed_users=[1, 2]", "trainer.hparams.learning_rate=1e-3",
        "experiment_name=a=b"])
    assert config.optimization.n_trials == 10
    assert config.optimization.pruner.type == "none" and config.optimization.seed is None
    assert config.telegram.allowed_users == [1, 2]
    assert config.fixed_hparams == {"learning_rate": 0.001}
    assert config.experiment_name == "a=b"  # split at the first "="


def test_overrides_are_validated_like_the_file(tmp_path):
    path = write(tmp_path, {"dataset_path": "d"})
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={}, overrides=["optimization.n_trails=3",
                                                 "optimization.n_trials=0"])
    assert error.value.problems == ["optimization.n_trails: unknown key; did you mean n_trials?",
                                    "optimization.n_trials: must be >= 1, got 0"]


def test_malformed_overrides_are_named(tmp_path):
    path = write(tmp_path, {"dataset_path": "d"})
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={}, overrides=["n_trials", "dataset_path.x=1",
                                                 "optimization.seed=[1", ".x=1"])
    assert error.value.problems == [
        "--set n_trials: expected KEY.PATH=VALUE, e.g. optimization.n_trials=10",
        "dataset_path.x: --set cannot set it, dataset_path is not a block of settings",
        "optimization.seed: --set value '[1' is not valid YAML: expected ',' or ']', but got "
        "'<stream end>'",
        "--set .x=1: expected KEY.PATH=VALUE, e.g. optimization.n_trials=10",
    ]


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    found = problems(tmp_path, "dataset_path: d\noptimization:\n  n_trials: [1, 2\n")
    assert len(found) == 1 and found[0].startswith("line 4, column 1: invalid YAML")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere\.yaml:\n  no such file; `smart-tuner init`"):
        load_config(tmp_path / "nowhere.yaml")


def test_objective_metric_and_direction_must_agree(tmp_path):
    assert problems(tmp_path, {"dataset_path": "d", "optimization": {
        "objective_metric": "alignment_score"}}) == [
        "optimization.direction: alignment_score is better when higher; use maximize"]


@pytest.mark.parametrize("grace", [30, 60])
def test_a_heartbeat_grace_no_longer_than_the_interval_is_refused(tmp_path, grace):
    assert problems(tmp_path, {"dataset_path": "d", "optimization": {
        "heartbeat_interval_s": 60, "heartbeat_grace_s": grace}}) == [
        f"optimization.heartbeat_grace_s: {grace} must be longer than heartbeat_interval_s "
        "(60), or a live trial is taken for a dead one; twice the interval or more is safe"]
    assert load(tmp_path, {"dataset_path": "d", "optimization": {
        "heartbeat_interval_s": 60, "heartbeat_grace_s": 61}}).optimization.heartbeat_grace_s


def test_bad_fixed_hparams(tmp_path):
    assert problems(tmp_path, {"dataset_path": "d", "trainer": {"hparams": {"batch_sise": 8}}}) \
        == ["trainer.hparams.batch_sise: unknown key; did you mean batch_size?"]
    assert problems(tmp_path, {"dataset_path": "d", "trainer": {"hparams": {"epochs": 0}}}) \
        == ["trainer.hparams: epochs=0: must be >= 1"]


# --- the search space -------------------------------------------------------------------

def space_problems(tmp_path: Path, space: dict, fixed: dict | None = None) -> list[str]:
    return problems(tmp_path, {"dataset_path": "d", "trainer": {"hparams": fixed or {}},
                               "hyperparameter_search_space": space})


def test_search_space_entries_are_typed(tmp_path):
    config = load(tmp_path, {"dataset_path": "d", "hyperparameter_search_space": {
        "learning_rate": {"type": "float", "min": "1e-4", "max": 0.01, "log": True},
        "warmup_steps": {"type": "int", "min": 0, "max": 100, "step": 10},
        "gate_threshold": {"type": "categorical", "choices": ["0.4", 0.5]},
    }})
    space = config.hyperparameter_search_space
    assert space["learning_rate"] == FloatRange(type="float", min=1e-4, max=0.01, log=True)
    assert space["warmup_steps"] == IntRange(type="int", min=0, max=100, step=10)
    # choices become the values the trainer parses them to
    assert space["gate_threshold"] == Categorical(choices=[0.4, 0.5])


def test_search_range_errors(tmp_path):
    assert space_problems(tmp_path, {
        "learning_rate": {"type": "float", "min": 0.01, "max": 0.001},
        "weight_decay": {"type": "float", "min": 0.0, "max": 0.1, "log": True},
        "lr_schedule": {"type": "categorical", "choices": []},
        "batch_size": {"type": "choice", "choices": [8]},
    }) == [
        "hyperparameter_search_space.learning_rate: min (0.01) is greater than max (0.001)",
        "hyperparameter_search_space.weight_decay: a log scale needs min > 0, got 0",
        "hyperparameter_search_space.lr_schedule.choices: must list at least one choice",
        "hyperparameter_search_space.batch_size.type: unknown search range type 'choice'; "
        "expected one of float, int, categorical",
    ]


def test_search_space_names_must_be_trainer_hparams(tmp_path):
    assert space_problems(tmp_path, {"lerning_rate": {"type": "float", "min": 0.1, "max": 1}}) \
        == ["hyperparameter_search_space.lerning_rate: unknown key; did you mean learning_rate?"]


def test_search_bounds_must_be_valid_trainer_values(tmp_path):
    assert space_problems(tmp_path, {
        "p_decoder_dropout": {"type": "float", "min": 0.0, "max": 1.5},
        "lr_schedule": {"type": "categorical", "choices": ["cosine", "sawtooth"]},
        "batch_size": {"type": "float", "min": 8, "max": 64},
    }) == [
        "hyperparameter_search_space.p_decoder_dropout.max: p_decoder_dropout=1.5: "
        "must be <= 0.99",
        "hyperparameter_search_space.lr_schedule.choices.1: lr_schedule='sawtooth': must be "
        "one of constant, linear, exponential, cosine, noam",
        "hyperparameter_search_space.batch_size.type: batch_size is an integer; use type: int",
    ]


def test_bounds_are_checked_together_with_the_fixed_hparams(tmp_path):
    # mel_fmax must not exceed half the sampling rate, which is fixed at 16 kHz here
    assert space_problems(tmp_path, {"mel_fmax": {"type": "float", "min": 4000, "max": 11025}},
                          fixed={"sampling_rate": 16000}) == [
        "hyperparameter_search_space.mel_fmax.max: mel_fmax=11025.0: must be <= "
        "sampling_rate / 2 (8000.0)"]


def test_a_searched_hparam_cannot_also_be_fixed(tmp_path):
    assert space_problems(tmp_path, {"epochs": {"type": "int", "min": 5, "max": 50}},
                          fixed={"epochs": 10}) == [
        "hyperparameter_search_space.epochs: also fixed in trainer.hparams; set it in one place"]


# --- early stopping ---------------------------------------------------------------------

def test_early_stopping_entries_become_criteria(tmp_path):
    config = load(tmp_path, {"dataset_path": "d", "early_stopping": {
        "slow": {"type": "plateau", "window": 4},
        "wait": {"type": "patience", "metric": "val_loss", "enabled": False},
    }})
    assert config.early_stopping == {"slow": Plateau(window=4),
                                     "wait": Patience(metric="val_loss", enabled=False)}


def test_unknown_early_stopping_type(tmp_path):
    assert problems(tmp_path, {"dataset_path": "d", "early_stopping": {
        "x": {"type": "patient"}, "y": {"patience": 3}}}) == [
        "early_stopping.x.type: unknown criterion type 'patient'; expected one of patience, "
        "overfitting, divergence, plateau, alignment",
        "early_stopping.y.type: missing; expected one of patience, overfitting, divergence, "
        "plateau, alignment",
    ]


def test_criterion_settings_are_validated_by_the_criterion(tmp_path):
    assert problems(tmp_path, {"dataset_path": "d", "early_stopping": {
        "wait": {"type": "patience", "metric": "val_los", "patience": 0, "action": "halt"}}}) == [
        "early_stopping.wait.action: expected 'continue', 'stop', 'prune' or 'adapt', "
        "got 'halt'",
        "early_stopping.wait.metric: expected 'objective', 'val_loss', 'train_loss', "
        "'val_mel_loss', 'val_gate_loss', 'grad_norm', 'alignment_score', 'attention_focus', "
        "'attention_progress', 'attention_coverage' or 'stop_rate', got 'val_los'",
        "early_stopping.wait.patience: must be >= 1, got 0",
    ]
