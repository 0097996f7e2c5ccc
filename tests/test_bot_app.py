"""Starting the bot: settings checks, the token kept out of logs, and a real run."""

import io
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import run_bot
from bot.app import RedactToken, SettingsError, check_settings
from tests.bot_support import ALICE, TOKEN, add_study, trial, write_config
from tests.deadlines import scaled
from tests.e2e.fake_telegram import FakeTelegram
from tuner_core import SmartTuner, tracking

ROOT = Path(__file__).resolve().parents[1]


def tuner(tmp_path: Path, token: str | None = TOKEN, **telegram: object) -> SmartTuner:
    environ = {"TELEGRAM_BOT_TOKEN": token} if token else {}
    return SmartTuner(write_config(tmp_path, **telegram), environ=environ)


def test_the_token_comes_from_the_environment(tmp_path: Path) -> None:
    assert check_settings(tuner(tmp_path).config) == TOKEN


def test_a_missing_token_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="@BotFather"):
        check_settings(tuner(tmp_path, token=None).config)


def test_a_malformed_token_is_refused_without_showing_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as refused:
        check_settings(tuner(tmp_path, token="secret-with no colon").config)
    assert "malformed" in str(refused.value)
    assert "secret" not in str(refused.value)


def test_an_empty_allow_list_is_refused_unless_everyone_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="TELEGRAM_ALLOWED_USERS"):
        check_settings(tuner(tmp_path, allowed_users=[]).config)
    assert check_settings(tuner(tmp_path, allowed_users=[], allow_everyone=True).config) == TOKEN


def test_run_bot_exits_2_with_advice_when_the_token_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    assert run_bot.main(["--config", str(write_config(tmp_path))]) == 2
    assert "@BotFather" in capsys.readouterr().err


def test_the_token_never_reaches_the_log() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactToken(TOKEN))
    logger = logging.getLogger("test_bot_app.redaction")
    logger.addHandler(handler)
    try:
        logger.error("POST https://api.telegram.org/bot%s/getMe failed", TOKEN)
        try:
            raise ConnectionError(f"cannot reach /bot{TOKEN.replace(':', '%3A')}/sendMessage")
        except ConnectionError:
            logger.exception("request failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "bot<bot token>/getMe" in output and "bot<bot token>/sendMessage" in output
    assert TOKEN not in output and TOKEN.split(":")[1] not in output


def test_the_bot_serves_notifies_and_stops_on_sigterm(tmp_path: Path) -> None:
    """run_bot.py against the loopback fake of the Bot API, as a user would run it."""
    config = write_config(tmp_path)
    add_study(SmartTuner(config, environ={}), "s", [trial(value=0.5)])
    with FakeTelegram() as fake:
        fake.add_user(ALICE)
        environ = {key: value for key, value in os.environ.items()
                   if not key.startswith("TELEGRAM_")} | {"TELEGRAM_BOT_TOKEN": fake.token}
        bot = subprocess.Popen([sys.executable, "run_bot.py", "--config", str(config),
                                "--api-server", fake.url], cwd=ROOT, env=environ,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            fake.wait_for(lambda: fake.find_message(ALICE, "New best"), timeout=90)
            fake.user_sends(ALICE, "/status")
            fake.wait_for(lambda: fake.find_message(ALICE, "📊 Study s: running"), timeout=30)
            assert [c.params["commands"][0]["command"] for c in fake.calls_to("setMyCommands")
                    ] == ["tune"]
        finally:
            bot.send_signal(signal.SIGTERM)
            output = bot.communicate(timeout=scaled(30))[0].decode()
    assert bot.returncode == 0, output
    log = (tmp_path / "state" / "logs" / "bot.log").read_text()
    assert "bot stopped; running studies go on in their workers" in log
    # Issue 22, item 14: APScheduler's two INFO lines a poll are kept out of the log.
    assert "apscheduler" not in log and " ERROR " not in log, log
    assert fake.token not in log and fake.token not in output


def test_the_bot_starts_without_torch_mlflow_or_matplotlib(tmp_path: Path) -> None:
    """They take seconds to import and the bot needs them only for some buttons."""
    config = write_config(tmp_path)
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys; from bot.app import create_dispatcher;"
         "from bot.service import TunerService; from bot.state import BotState;"
         "from tuner_core import SmartTuner;"
         f"tuner = SmartTuner({str(config)!r}, environ={{}});"
         "create_dispatcher(TunerService(tuner), BotState.load(tuner.config.state_dir),"
         " tuner.config.telegram);"
         "print(sorted({name.split('.')[0] for name in sys.modules}"
         " & {'torch', 'mlflow', 'matplotlib'}))"],
        cwd=ROOT, capture_output=True, text=True, timeout=scaled(120))
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.splitlines()[-1] == "[]"


# In a fresh interpreter: the threads that import MLflow while the service answers.
IMPORTS_OF_MLFLOW = """
import asyncio, sys, threading
importers = []

class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "mlflow":
            importers.append(threading.current_thread().name)

sys.meta_path.insert(0, Spy())
from bot.service import BotError, TunerService
from tuner_core import SmartTuner

async def ask(service):
    try:
        return await service.{call}
    except BotError as error:
        return error

print(asyncio.run(ask(TunerService(SmartTuner({config!r}, environ={{}})))))
print(importers)
"""


@pytest.mark.parametrize("call", ["best()", "promote(1)"])
def test_the_first_best_or_promote_imports_mlflow_off_the_event_loop(
        tmp_path: Path, call: str) -> None:
    """MLflow takes seconds to import: on the event loop, the bot would answer nobody."""
    config = tuner(tmp_path).config_path
    add_study(SmartTuner(config, environ={}), "s", [trial(value=0.5)])
    # A registry to promote in (without one, promote refuses before MLflow loads).
    tracking.mlflow_client(SmartTuner(config, environ={}).config)
    answered = subprocess.run(
        [sys.executable, "-c", IMPORTS_OF_MLFLOW.format(call=call, config=str(config))],
        cwd=ROOT, capture_output=True, text=True, timeout=scaled(120))
    assert answered.returncode == 0, answered.stderr[-2000:]
    answer, importers = answered.stdout.splitlines()[-2:]
    assert answer.startswith("{") if call == "best()" else answer == "There is no model version 1."
    # /best reads two names kept on the trial, and needs no MLflow at all.
    assert importers == "[]" if call == "best()" else "MainThread" not in importers, importers
    assert call == "best()" or importers != "[]", importers
