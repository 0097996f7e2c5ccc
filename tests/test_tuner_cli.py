"""The headless CLI (python -m tuner_core) and the study plumbing it rests on."""

import argparse
import ast
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.conftest import TEST_HPARAMS
from tests.deadlines import scaled
from tests.test_tuner import ROOT, write_config
from tuner_core import SmartTuner, reporting
from tuner_core.__main__ import COMMANDS, build_parser, main
from tuner_core.config import load_config
from tuner_core.study import create_study, load_study
from tuner_core.study.pruner import make_pruner
from tuner_core.study.sampler import TrialSeeded, make_sampler


def test_tune_runs_a_study_and_the_other_commands_read_it(corpus, mel_cache, tmp_path,
                                                          capsys):
    path = write_config(tmp_path, corpus, mel_cache,
                        trainer={"hparams": {**TEST_HPARAMS, "epochs": 2}})
    proc = subprocess.run([sys.executable, "-m", "tuner_core", "tune", "--config", str(path),
                           "--trials", "1", "--study", "cli", "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=scaled(300))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "=== Study cli ===" in proc.stdout and "learning_rate" in proc.stdout
    assert (tmp_path / "state" / "logs" / "smart_tuner.log").stat().st_size > 0
    # One trainer log in the run folder, each line once (stderr, not a second handler).
    run_dir = tmp_path / "state" / "runs" / "cli" / "trial_0000"
    assert [path.name for path in run_dir.glob("*.log")] == ["train.log"]
    assert (run_dir / "train.log").read_text().count(" epoch 2 step ") == 1

    assert main(["status", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "study cli: finished (all trials done)" in out and "complete 1 of 1" in out
    assert main(["best", "--config", str(path), "--study", "cli"]) == 0
    assert "learning_rate" in capsys.readouterr().out
    assert main(["trials", "--config", str(path)]) == 0
    assert "trained all 2 epochs" in capsys.readouterr().out
    assert main(["studies", "--config", str(path)]) == 0
    assert "cli" in capsys.readouterr().out
    assert main(["stop", "--config", str(path)]) == 0
    assert load_config(path) and "stop requested for study cli" in capsys.readouterr().out
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[ok] dataset: 20 utterances" in out and "[ok] storage" in out
    assert "[ok] mlflow: disabled" in out


def test_check_names_an_unreachable_mlflow_server(tmp_path, corpus, mel_cache, capsys,
                                                  monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once, not in minutes
    path = write_config(tmp_path, corpus, mel_cache,
                        mlflow={"enabled": True, "tracking_uri": "http://127.0.0.1:9"})
    assert main(["check", "--config", str(path)]) == 1
    assert "[FAIL] mlflow: http://127.0.0.1:9:" in capsys.readouterr().out


def test_clear_errors_for_a_bad_config_an_unknown_study_and_bad_arguments(tmp_path, capsys,
                                                                         corpus, mel_cache):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"dataset_path: {corpus}\noptimization:\n  n_trails: 3\n")
    assert main(["status", "--config", str(bad)]) == 2
    assert "optimization.n_trails: unknown key; did you mean n_trials?" in capsys.readouterr().err
    path = write_config(tmp_path, corpus, mel_cache)
    assert main(["status", "--config", str(path), "--study", "nope"]) == 2
    assert "no study named 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tune", "--config", str(path), "--trials", "0"])
    assert "must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(("kind", "expected"), [
    ("tpe", optuna.samplers.TPESampler), ("random", optuna.samplers.RandomSampler),
    ("cmaes", optuna.samplers.CmaEsSampler), ("gp", optuna.samplers.GPSampler)])
def test_samplers_come_from_the_config(tmp_path, corpus, mel_cache, kind, expected):
    config = load_config(write_config(tmp_path, corpus, mel_cache,
                                      optimization={"sampler": {"type": kind}, "seed": None}))
    assert isinstance(make_sampler(config.optimization), expected)
    seeded = config.optimization.model_copy(update={"seed": 3})
    sampler = make_sampler(seeded)
    trial = optuna.create_study(sampler=sampler).ask()
    assert isinstance(sampler, TrialSeeded) and isinstance(sampler.of(trial), expected)


@pytest.mark.parametrize(("pruner", "expected"), [
    ({"type": "median"}, optuna.pruners.MedianPruner),
    ({"type": "percentile", "percentile": 25}, optuna.pruners.PercentilePruner),
    ({"type": "successive_halving"}, optuna.pruners.SuccessiveHalvingPruner),
    ({"type": "hyperband"}, optuna.pruners.HyperbandPruner),
    ({"type": "none"}, optuna.pruners.NopPruner),
    ({"type": "median", "patience": 2}, optuna.pruners.PatientPruner)])
def test_pruners_come_from_the_config(tmp_path, corpus, mel_cache, pruner, expected):
    config = load_config(write_config(tmp_path, corpus, mel_cache,
                                      optimization={"pruner": pruner}))
    assert isinstance(make_pruner(config.optimization), expected)


def test_a_seeded_study_suggests_the_same_parameters_again(tmp_path, corpus, mel_cache):
    config = load_config(write_config(tmp_path, corpus, mel_cache,
                                      optimization={"seed": 7, "sampler": {"type": "tpe"}}))
    suggested = []
    for name in ("a", "b"):
        study = create_study(config, name, 3)
        suggested.append([study.ask().suggest_float("learning_rate", 1e-4, 5e-3, log=True)
                          for _ in range(3)])
    assert suggested[0] == suggested[1]


def test_two_workers_of_a_seeded_study_draw_different_parameters(tmp_path, corpus, mel_cache):
    config = load_config(write_config(tmp_path, corpus, mel_cache,
                                      optimization={"seed": 7, "sampler": {"type": "tpe"}}))
    create_study(config, "shared", 6)
    # Two workers: each process loads the study with its own sampler from the same config.
    workers = [load_study(config, "shared") for _ in range(2)]
    drawn = [workers[n % 2].ask().suggest_float("learning_rate", 1e-4, 5e-3, log=True)
             for n in range(6)]
    assert len(set(drawn)) == 6, drawn


def test_the_devices_of_a_seeded_worker_draw_what_one_device_would(tmp_path, corpus, mel_cache):
    from concurrent.futures import ThreadPoolExecutor

    config = load_config(write_config(tmp_path, corpus, mel_cache,
                                      optimization={"seed": 7, "sampler": {"type": "random"}}))

    def draw(study: optuna.Study) -> tuple[int, list[float]]:
        trial = study.ask()
        return trial.number, [trial.suggest_float(name, 1e-4, 5e-3, log=True)
                              for name in ("learning_rate", "weight_decay")]

    alone = create_study(config, "alone", 8)
    expected = dict(draw(alone) for _ in range(8))
    # A worker's devices are threads that share one study object, and so one sampler.
    together = create_study(config, "together", 8)
    with ThreadPoolExecutor(4) as pool:
        drawn = dict(pool.map(lambda _: draw(together), range(8)))
    assert drawn == expected


def test_threads_opening_a_new_storage_at_once_share_one(tmp_path, corpus, mel_cache):
    from concurrent.futures import ThreadPoolExecutor

    from tuner_core.storage import open_storage

    config = load_config(write_config(tmp_path, corpus, mel_cache))
    with ThreadPoolExecutor(4) as pool:
        storages = list(pool.map(lambda _: open_storage(config), range(4)))
    assert all(storage is storages[0] for storage in storages)
    assert optuna.get_all_study_summaries(storages[0]) == []


# --- help, overrides, delete ------------------------------------------------------------

def test_every_command_and_option_is_described_in_plain_text(capsys):
    subcommands = next(action for action in build_parser()._actions
                       if isinstance(action, argparse._SubParsersAction))
    assert list(subcommands.choices) == [*COMMANDS, "init"]
    for name, parser in subcommands.choices.items():
        assert parser.description, name
        for action in parser._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}"
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert "``" not in text and ":data:" not in text and ":class:" not in text, name
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "delete    Delete a study" in text


def test_help_says_where_the_default_config_is_looked_for(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert ("takes --config: default $SMART_TUNER_CONFIG, else ./smart_tuner.yaml (what "
            "\"init\" writes), else ./config/smart_tuner.yaml") in shown
    assert "Relative paths in a config are taken from its folder" in shown
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "else ./smart_tuner.yaml as init writes it, else ./config/smart_tuner.yaml" in shown


def test_the_same_config_from_another_working_folder_uses_the_same_state(
        tmp_path, monkeypatch, capsys):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    config = project / "tuner.yaml"
    config.write_text("dataset_path: corpus\nstate_dir: state\n")
    monkeypatch.chdir(project)
    create_study(load_config("tuner.yaml"), "made-here", 1)
    monkeypatch.chdir(elsewhere)
    assert main(["studies", "--config", "../project/tuner.yaml"]) == 0
    assert "made-here" in capsys.readouterr().out
    assert list(elsewhere.iterdir()) == []


def test_init_writes_a_starter_config_that_loads_and_checks(tmp_path, corpus, monkeypatch,
                                                            capsys):
    monkeypatch.delenv("SMART_TUNER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["init", "new"]) == 0
    assert "check --config new/smart_tuner.yaml" in capsys.readouterr().out
    starter = (tmp_path / "new" / "smart_tuner.yaml").read_text()
    assert main(["init", "new"]) == 2
    assert "new/smart_tuner.yaml exists; nothing written" in capsys.readouterr().err
    assert (tmp_path / "new" / "smart_tuner.yaml").read_text() == starter
    monkeypatch.chdir(tmp_path / "new")  # where it is the default config
    assert main(["check", "--set", f"dataset_path={corpus}"]) == 0
    out = capsys.readouterr().out
    assert f"[ok] state folder: {tmp_path}/new/.state (new" in out
    assert "[ok] dataset: 20 utterances" in out and "[ok] storage" in out


def test_set_overrides_the_config_file(tmp_path, corpus, mel_cache, capsys):
    path = write_config(tmp_path, corpus, mel_cache, optimization={"n_trials": 0})
    assert main(["studies", "--config", str(path)]) == 2
    assert "optimization.n_trials: must be >= 1, got 0" in capsys.readouterr().err
    SmartTuner(path, overrides=["optimization.n_trials=3"]).storage()  # one to list
    assert main(["studies", "--config", str(path), "--set", "optimization.n_trials=3"]) == 0
    assert main(["studies", "--config", str(path), "--set", "optimization.n_trails=3",
                 "--set", "optimization.n_trials=3"]) == 2
    assert "optimization.n_trails: unknown key" in capsys.readouterr().err


def test_a_worker_started_for_a_study_gets_the_overrides(tmp_path, corpus, mel_cache):
    # The override makes every trainer fail at once; without it the trial would train.
    tuner = SmartTuner(write_config(tmp_path, corpus, mel_cache),
                       overrides=["trainer.python=/bin/false"])
    name, worker = tuner.start_study(n_trials=1, study_name="overridden")
    worker.wait(timeout=scaled(300))
    (trial,) = load_study(tuner.config, name).trials
    assert trial.state is TrialState.FAIL and trial.user_attrs["exit_code"] == 1


# Trials made with ask/tell, not optimize: Optuna warns that they beat no heartbeat.
ASKED_TRIALS = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def _study_with_runs_and_checkpoints(config, name: str) -> list[str]:
    """A finished study of one trial, with MLflow runs and a checkpoint; its run ids."""
    from tuner_core.tracking.store import STUDY_TAG, ensure_experiment, mlflow_client

    study = create_study(config, name, 1)
    study.tell(study.ask(), 1.0)
    client = mlflow_client(config)
    experiment = ensure_experiment(client, config)
    folder = config.checkpoint_dir / name / "trial_0000"
    folder.mkdir(parents=True)
    (folder / "best.pt").write_bytes(b"weights")
    return [client.create_run(experiment, tags={STUDY_TAG: name}).info.run_id
            for _ in range(2)]


@ASKED_TRIALS
def test_delete_removes_a_study_its_mlflow_runs_and_checkpoints(tmp_path, corpus, mel_cache,
                                                                 capsys, monkeypatch):
    from tuner_core.tracking.store import mlflow_client

    path = write_config(tmp_path, corpus, mel_cache, mlflow={"enabled": True})
    config = load_config(path)
    gone = _study_with_runs_and_checkpoints(config, "gone")
    kept = _study_with_runs_and_checkpoints(config, "kept")
    delete = ["delete", "--config", str(path), "--study", "gone"]

    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    assert main(delete) == 1
    out = capsys.readouterr().out
    assert "study gone: 1 trials, 2 MLflow runs, checkpoints folder" in out
    assert "nothing deleted" in out and (config.checkpoint_dir / "gone").is_dir()

    assert main([*delete, "--yes"]) == 0
    assert "deleted study gone" in capsys.readouterr().out
    assert optuna.get_all_study_names(config.storage_url) == ["kept"]
    client = mlflow_client(config)
    assert {client.get_run(run).info.lifecycle_stage for run in gone} == {"deleted"}
    assert {client.get_run(run).info.lifecycle_stage for run in kept} == {"active"}
    assert not (config.checkpoint_dir / "gone").exists()
    assert (config.checkpoint_dir / "kept" / "trial_0000" / "best.pt").is_file()

    assert main([*delete, "--yes"]) == 2
    assert "no study named 'gone'" in capsys.readouterr().err


@ASKED_TRIALS
def test_delete_refuses_a_study_with_a_running_trial(tmp_path, corpus, mel_cache, capsys):
    path = write_config(tmp_path, corpus, mel_cache)
    config = load_config(path)
    create_study(config, "busy", 2).ask()  # a trial that runs, its worker alive
    assert main(["delete", "--config", str(path), "--study", "busy", "--yes"]) == 2
    assert "study busy has 1 running trial(s); stop it first" in capsys.readouterr().err
    assert optuna.get_all_study_names(config.storage_url) == ["busy"]


# The one exception: Optuna offers no way to complete a finished trial's record (why its
# worker was lost, a checkpoint retention deleted), so this module writes the user
# attribute into Optuna's own table, as Optuna does.
PRIVATE_OPTUNA_ALLOWED = {Path("tuner_core/storage/records.py")}


# Runs the CLI with the arguments after -c, then prints which of PACKAGES it loaded.
HEAVY_PACKAGES = ("torch", "mlflow", "matplotlib")
CLI_THEN_LOADED = """
import runpy, sys
try:
    runpy.run_module("tuner_core", run_name="__main__")
except SystemExit as exit:
    assert not exit.code, exit.code
print(sorted({{name.split(".")[0] for name in sys.modules}} & set({packages!r})))
"""


def loaded_by_cli(args: list[str], packages: tuple[str, ...] = HEAVY_PACKAGES) -> list[str]:
    """Which of ``packages`` ``python -m tuner_core ARGS`` imports, in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", CLI_THEN_LOADED.format(packages=packages),
                           *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=scaled(300))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return eval(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("command", [["--help"], ["status"], ["trials"], ["best"],
                                     ["studies"]])
def test_commands_that_read_the_storage_load_no_torch_mlflow_or_matplotlib(
        command, tmp_path, corpus, mel_cache):
    path = write_config(tmp_path, corpus, mel_cache)
    create_study(load_config(path), "light", 1)
    args = command if command == ["--help"] else [*command, "--config", str(path)]
    assert loaded_by_cli(args) == []


def test_a_worker_without_mlflow_imports_no_mlflow(corpus, mel_cache, tmp_path):
    """MLflow takes seconds to import; a worker with tracking off never loads it."""
    path = write_config(tmp_path, corpus, mel_cache,
                        trainer={"hparams": {**TEST_HPARAMS, "epochs": 1}})
    assert loaded_by_cli(["tune", "--config", str(path), "--trials", "1", "--quiet"],
                         ("mlflow",)) == []
    study = load_study(load_config(path), SmartTuner(path).latest_study_name())
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE]


def test_help_loads_neither_optuna_nor_pydantic():
    """The CLI's packages load their names on first use (tuner_core.lazy)."""
    assert loaded_by_cli(["--help"], ("optuna", "pydantic", "sqlalchemy", "yaml")) == []
    assert loaded_by_cli(["tune", "--help"], ("optuna", "pydantic")) == []


def test_only_optunas_public_api_is_used():
    """No reaching into a study's or trial's private attributes or Optuna's private modules
    (they change between Optuna releases); the storage's own methods are public."""
    private = {"_storage", "_study_id", "_trial_id"}
    for folder in ("tuner_core", "bot", "train", "bench", "tests"):
        for source in (ROOT / folder).rglob("*.py"):
            where = source.relative_to(ROOT)
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                if (isinstance(node, ast.Attribute) and node.attr in private
                        and not (isinstance(node.value, ast.Name) and node.value.id == "self")):
                    pytest.fail(f"{where}:{node.lineno}: .{node.attr}")
                modules = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                           [alias.name for alias in node.names] if isinstance(node, ast.Import)
                           else [])
                if where not in PRIVATE_OPTUNA_ALLOWED and any(
                        name.startswith("optuna.") and "._" in f".{name}" for name in modules):
                    pytest.fail(f"{where}:{node.lineno}: a private Optuna module")


# --- reads that find nothing, default names, stopped trials --------------------------------

def config_without_state(tmp_path: Path) -> Path:
    """A config whose state folder (and so its SQLite storage and MLflow store) is not there."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"dataset_path": str(tmp_path / "corpus"),
                                    "state_dir": str(tmp_path / "nowhere" / "state"),
                                    "mlflow": {"enabled": True}}))
    return path


@pytest.mark.parametrize("command", [["status"], ["status", "--study", "mine"], ["trials"],
                                     ["best", "--json"], ["studies"], ["models"],
                                     ["promote", "best"], ["export", "champion", "--out"]])
def test_reading_a_state_folder_that_is_not_there_creates_nothing(tmp_path, capsys, command):
    path = config_without_state(tmp_path)
    if command[-1] == "--out":
        command = [*command, str(tmp_path / "nowhere" / "exported")]
    assert main([*command, "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    state = tmp_path / "nowhere" / "state"
    if command[0] in ("models", "promote", "export"):
        assert line.startswith(f"error: no model registry yet at sqlite:///{state}/mlflow.db")
    else:
        assert line.startswith("error: no study") and f"sqlite:///{state}/optuna.db" in line
        assert line.endswith(" does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_studies_created_in_the_same_instant_without_a_name_are_two(tmp_path, monkeypatch):
    from tuner_core.study import life

    config = load_config(config_without_state(tmp_path))
    instant = 1_750_000_000.25
    monkeypatch.setattr(life, "time", SimpleNamespace(
        time=lambda: instant, localtime=time.localtime,
        strftime=lambda fmt, when=None: time.strftime(fmt, time.localtime(instant))))
    first, second = create_study(config, None, 2), create_study(config, None, 3)
    assert first.study_name != second.study_name
    assert first.study_name.startswith(f"{config.experiment_name}-"
                                       f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(instant))}")
    assert [load_study(config, study.study_name).user_attrs["n_trials"]
            for study in (first, second)] == [2, 3]


def test_a_study_created_without_a_name_never_joins_an_existing_one(tmp_path, monkeypatch):
    from tuner_core.study import life

    config = load_config(config_without_state(tmp_path))
    monkeypatch.setattr(life, "default_study_name", lambda config: "clash")
    create_study(config, None, 2)
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):
        create_study(config, None, 3)
    assert load_study(config, "clash").user_attrs["n_trials"] == 2  # not taken over


@ASKED_TRIALS
def test_a_stopped_trial_is_counted_as_stopped_not_pruned(tmp_path, capsys):
    path = config_without_state(tmp_path)
    config = load_config(path)
    study = create_study(config, "halted", 3)
    for state, outcome in ((TrialState.COMPLETE, "completed"), (TrialState.PRUNED, "pruned"),
                           (TrialState.PRUNED, "stopped_by_user")):
        study.add_trial(optuna.create_trial(
            state=state, value=1.0 if state is TrialState.COMPLETE else None,
            params={"learning_rate": 1e-3}, user_attrs={"outcome": outcome},
            distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2)}))

    assert main(["status", "--config", str(path)]) == 0
    assert "trials: complete 1, pruned 1, stopped 1 of 3" in capsys.readouterr().out
    assert main(["status", "--config", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["outcomes"] == {"completed": 1, "pruned": 1, "stopped_by_user": 1}
    assert status["counts"]["PRUNED"] == 2  # Optuna's states, as before
    result = reporting.result_summary(study)
    assert result["outcomes"] == status["outcomes"] and result["states"]["PRUNED"] == 2
