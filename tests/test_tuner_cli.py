"""The headless CLI (python -m tuner_core) and the study plumbing it rests on."""

import subprocess
import sys

import optuna
import pytest

from tests.conftest import TEST_HPARAMS
from tests.test_tuner import ROOT, write_config
from tuner_core.__main__ import main
from tuner_core.config import load_config
from tuner_core.sampling import TrialSeeded, make_sampler
from tuner_core.study import create_study, load_study, make_pruner


def test_tune_runs_a_study_and_the_other_commands_read_it(corpus, mel_cache, tmp_path,
                                                          capsys):
    path = write_config(tmp_path, corpus, mel_cache,
                        trainer={"hparams": {**TEST_HPARAMS, "epochs": 2}})
    proc = subprocess.run([sys.executable, "-m", "tuner_core", "tune", "--config", str(path),
                           "--trials", "1", "--study", "cli", "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "=== Study cli ===" in proc.stdout and "learning_rate" in proc.stdout
    assert (tmp_path / "state" / "logs" / "smart_tuner.log").stat().st_size > 0

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
    assert isinstance(sampler, TrialSeeded) and isinstance(sampler.sampler, expected)


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


def test_threads_opening_a_new_storage_at_once_share_one(tmp_path, corpus, mel_cache):
    from concurrent.futures import ThreadPoolExecutor

    from tuner_core.study import open_storage

    config = load_config(write_config(tmp_path, corpus, mel_cache))
    with ThreadPoolExecutor(4) as pool:
        storages = list(pool.map(lambda _: open_storage(config), range(4)))
    assert all(storage is storages[0] for storage in storages)
    assert optuna.get_all_study_summaries(storages[0]) == []
