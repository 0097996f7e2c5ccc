"""One trainer per device: ``trainer.devices`` (and ``--devices``), what each trainer is
told of its device, and a device whose trainer crashes taking the next trial."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from tests.test_replay import replay_config
from tuner_core import ConfigError, load_config
from tuner_core.__main__ import main
from tuner_core.study import create_study, run_worker
from tuner_core.trial import runner
from tuner_core.trial.devices import DEFAULT_DEVICE, Device, resolve_devices


def test_the_device_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_devices(None) == [DEFAULT_DEVICE]
    assert [d.name for d in resolve_devices("cpu:3")] == ["cpu:0", "cpu:1", "cpu:2"]
    gpus = resolve_devices("2,5")
    assert [(d.name, d.environment(), d.hparams()) for d in gpus] == [
        ("cuda:2", {"CUDA_VISIBLE_DEVICES": "2"}, {"device": "cuda"}),
        ("cuda:5", {"CUDA_VISIBLE_DEVICES": "5"}, {"device": "cuda"})]
    cpu = resolve_devices("cpu:1")[0]
    assert cpu.environment() == {"CUDA_VISIBLE_DEVICES": ""} and cpu.hparams() == {
        "device": "cpu"}
    assert DEFAULT_DEVICE.environment() == {} and DEFAULT_DEVICE.hparams() == {}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert [d.name for d in resolve_devices("auto")] == ["cuda:1", "cuda:3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: one CPU trainer
    assert [d.name for d in resolve_devices("auto")] == ["cpu:0"]


def test_a_bad_device_list_is_refused_with_its_key(tmp_path: Path) -> None:
    path = replay_config(tmp_path)
    for good in ("0,1,2,3", "auto", "cpu:2", "0, 1"):
        assert load_config(path, {}, [f"trainer.devices='{good}'"]).trainer.devices == (
            good.replace(" ", ""))
    assert load_config(path, {}).trainer.devices is None  # one trainer, as before
    for bad in ("gpu0", "cpu:0", "0,,1", "all"):
        with pytest.raises(ConfigError, match=r"trainer\.devices: .*not a device list"):
            load_config(path, {}, [f"trainer.devices='{bad}'"])


def test_the_cli_checks_devices_as_the_config_does(tmp_path: Path, capsys) -> None:
    path = replay_config(tmp_path)
    assert main(["worker", "--config", str(path), "--follow", "--devices", "gpu:1"]) == 2
    assert "trainer.devices" in capsys.readouterr().err


def test_a_trainer_sees_only_its_device_and_its_share_of_the_cores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(replay_config(tmp_path))
    started: list[dict[str, str]] = []
    monkeypatch.setattr(runner, "TrainerProcess",
                        lambda args, run_dir, python, cwd, env, launcher, program:
                        started.append(env))
    trial_runner = runner.TrialRunner(config, "s", device=Device("cuda:3", "3", "cuda"),
                                      trainers=2)
    trial_runner._start_trainer({}, tmp_path / "run", None, threads=4)
    [env] = started
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["OMP_NUM_THREADS"] == "4"
    trial_runner.close()


PACED_OR_CRASHING_PYTHON = """#!{python}
import os, subprocess, sys, time
try:  # the first trainer started crashes at once
    os.close(os.open({marker!r}, os.O_CREAT | os.O_EXCL))
    sys.exit(1)
except FileExistsError:
    pass
child = subprocess.Popen([{python!r}, *sys.argv[1:]], stdout=subprocess.PIPE, text=True)
for line in child.stdout:
    if '"validation"' in line:
        time.sleep(0.1)
    sys.stdout.write(line)
    sys.stdout.flush()
sys.exit(child.wait())
"""


def test_a_device_whose_trainer_crashed_takes_the_next_trial(tmp_path: Path) -> None:
    path = replay_config(tmp_path, early_stopping={}, pruner={"type": "none"})
    python = tmp_path / "python"
    python.write_text(PACED_OR_CRASHING_PYTHON.format(python=sys.executable,
                                                      marker=str(tmp_path / "crashed")))
    python.chmod(0o755)
    settings = yaml.safe_load(path.read_text())
    settings["trainer"]["python"] = str(python)
    path.write_text(yaml.safe_dump(settings))
    config = load_config(path)
    study = create_study(config, "crash", 4)
    run_worker(config, study, poll_s=0.05, devices=resolve_devices("cpu:2"))

    trials = study.get_trials()
    assert len(trials) == 4  # the budget, the failed trial counted
    [failed] = [t for t in trials if t.state is TrialState.FAIL]
    assert failed.user_attrs["criterion"] == "crash"
    assert sum(t.state is TrialState.COMPLETE for t in trials) == 3
    # The crashed trainer's device trained again while the other's first trial still ran:
    # it was freed at once. (Which device's trainer starts first, and so crashes, is the
    # machine's choice.)
    crashed_on = failed.user_attrs["device"]
    other_first = min((t for t in trials if t.user_attrs["device"] != crashed_on),
                      key=lambda t: t.number)
    again = [t for t in trials if t.user_attrs["device"] == crashed_on and t is not failed]
    assert again and min(t.datetime_start for t in again) < other_first.datetime_complete
    assert {t.user_attrs["device"] for t in trials} == {"cpu:0", "cpu:1"}
