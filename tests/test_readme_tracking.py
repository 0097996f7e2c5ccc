"""The README's "Tracking, models and reports" commands, as written and in their order,
after a demo-like study (the demo's names and folders, the test's tiny model and corpus)."""

import os
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import TEST_HPARAMS
from tests.deadlines import scaled
from tests.test_mlflow_server import _free_port
from tests.test_tuner import ROOT, write_config
from tuner_core import SmartTuner
from tuner_core.reporting.next_steps import closing_note

SECTION = "## Tracking, models and reports"
SERVERS = ("mlflow ui", "optuna-dashboard")  # commands that serve until stopped
STARTUP_TIMEOUT_S = 180  # a loaded CI machine takes long to import MLflow's server
COMMAND_TIMEOUT_S = 300


def readme_blocks(language: str) -> list[str]:
    """The ``language`` code blocks of the README's section on tracking."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ")]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def command_lines(block: str) -> list[str]:
    """The commands of a shell block, continuation lines joined."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def answered(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None  # not listening yet


def demo_like(tmp_path: Path, corpus: Path, mel_cache: Path) -> dict[str, str]:
    """config/demo.yaml, .state/demo and .venv in ``tmp_path`` as in a checkout after
    ``make venv``: a 1-trial study of the test's tiny model. The environment to run in."""
    state = tmp_path / ".state" / "demo"
    path = write_config(
        tmp_path, corpus, mel_cache, experiment_name="tacotron2_demo", state_dir=str(state),
        trainer={"hparams": {**TEST_HPARAMS, "epochs": 1, "artifacts": "end"}},
        optimization={"n_trials": 1}, mlflow={"enabled": True})
    (tmp_path / "config").mkdir()
    path.rename(tmp_path / "config" / "demo.yaml")
    state.mkdir(parents=True)
    (state / "mel_cache").symlink_to(mel_cache)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    return os.environ | {"PYTHONPATH": str(ROOT), "PWD": str(tmp_path),
                         "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def run(words: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=scaled(COMMAND_TIMEOUT_S))
    assert done.returncode == 0, f"{shlex.join(words)}:\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


def serve(commands: list[list[str]], cwd: Path, env: dict[str, str]) -> None:
    """Start the servers together on free ports; return once each serves the demo study."""
    servers, checks = [], []
    for words in commands:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        servers.append(subprocess.Popen([*words, "--port", str(port)], cwd=cwd, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        checks.append(
            (f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=tacotron2_demo",
             '"name": "tacotron2_demo"') if "mlflow" in words else
            (f"{url}/api/studies", "tacotron2_demo-"))
    try:
        startup_s = scaled(STARTUP_TIMEOUT_S)
        deadline = time.monotonic() + startup_s
        waiting = dict(zip(checks, servers, strict=True))
        while waiting and time.monotonic() < deadline:
            for (url, expected), server in list(waiting.items()):
                assert server.poll() is None, f"{url}: the server exited"
                body = answered(url)
                if body is not None:
                    assert expected in body.decode(), body[:2000]
                    del waiting[(url, expected)]
            time.sleep(0.5)
        assert not waiting, f"no answer within {startup_s:.0f} s: {list(waiting)}"
    finally:
        for server in servers:
            server.terminate()
            try:
                server.wait(timeout=scaled(30))
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def test_the_readme_tracking_commands_work_as_written_after_a_demo(tmp_path, corpus,
                                                                    mel_cache):
    env = demo_like(tmp_path, corpus, mel_cache)
    done = subprocess.run([".venv/bin/python", "-m", "tuner_core", "tune", "--config",
                           "config/demo.yaml"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=scaled(COMMAND_TIMEOUT_S))
    assert done.returncode == 0, done.stderr[-3000:]
    # The closing note: what was registered, no champion yet, where to look, what next.
    note = done.stdout
    for expected in ("Registered model tacotron2_demo:\n  version 1: trial 0, val_loss ",
                     "No champion yet: promotion is your decision.",
                     ".venv/bin/python -m tuner_core promote best --config config/demo.yaml",
                     ".venv/bin/python -m mlflow ui --backend-store-uri sqlite:///",
                     "then open http://127.0.0.1:5000/#/experiments/",
                     "?workflowType=machine_learning\n",
                     ".venv/bin/optuna-dashboard sqlite:///",
                     ".venv/bin/python -m tuner_core report --config config/demo.yaml",
                     ".venv/bin/python -m train.synthesize --checkpoint "
                     "models:/tacotron2_demo@champion",
                     "run_bot.py --config config/demo.yaml"):
        assert expected in note, note
    # MLflow's and alembic's INFO records go to the log file, not across the progress bars.
    assert "INFO" not in done.stderr, done.stderr[-3000:]
    log = (tmp_path / ".state" / "demo" / "logs" / "smart_tuner.log").read_text()
    assert "mlflow.store.db.utils: Creating initial MLflow database tables" in log

    (block,) = readme_blocks("bash")
    lines = command_lines(block)
    commands = [shlex.split(line.replace("$PWD", str(tmp_path)), comments=True)
                for line in lines]
    assert [words[:4] for words in commands[:2]] == [
        [".venv/bin/python", "-m", "mlflow", "ui"],
        [".venv/bin/optuna-dashboard", f"sqlite:///{tmp_path}/.state/demo/optuna.db"]]
    serve(commands[:2], tmp_path, env)
    outputs = [run(words, tmp_path, env) for words in commands[2:]]
    assert "champion" not in outputs[0] and "version" in outputs[0]  # models
    assert re.fullmatch(r"version \d+ is the champion\n", outputs[1])  # promote best
    assert {path.name for path in (tmp_path / "exported").iterdir()} >= {
        "best.pt", "hparams.json", "config.yaml", "MODEL_CARD.md"}
    assert (tmp_path / "report" / "report.md").is_file()
    assert (tmp_path / "hello.wav").stat().st_size > 1000
    (python_block,) = readme_blocks("python")
    script = tmp_path / "load_champion.py"
    script.write_text(python_block)
    assert "Tacotron2" in run([".venv/bin/python", script.name], tmp_path, env)

    # Now that there is a champion, the closing note shows its figures.
    tuner = SmartTuner(tmp_path / "config" / "demo.yaml")
    note = closing_note(tuner.config, tuner.study(), "config/demo.yaml")
    assert re.search(r"Champion: version \d+ \(trial \d+ of study tacotron2_demo-", note), note
    assert re.search(r"/alignment/alignment_e0001\.png\n  .*/mel/mel_e0001\.png$", note,
                     flags=re.MULTILINE), note
