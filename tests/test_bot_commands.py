"""The bot's commands and buttons, fed to the real dispatcher over real (synthetic) studies."""

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from bot import keyboards
from bot.handlers.fallback import FAILED, STALE_BUTTON
from bot.messages import CAPTION_LIMIT, PRIVATE
from bot.notifier import Notifier
from tests.bot_support import (
    ALICE,
    BOB,
    MALLORY,
    BotHarness,
    add_study,
    trial,
    write_config,
)
from tuner_core import SmartTuner
from tuner_core.storage import STOP_ATTR, open_storage
from tuner_core.study import create_study, load_study


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[subprocess.Popen]]:
    """SmartTuner.start_study creating the study for real, with `sleep` as its worker."""
    started: list[subprocess.Popen] = []

    def start_study(self: SmartTuner, n_trials: int | None = None,
                    study_name: str | None = None, log_file: Path | None = None,
                    local_worker: bool = True):
        study = create_study(self.config, study_name or f"study-{len(started)}", n_trials)
        if not local_worker:
            return study.study_name, None
        started.append(subprocess.Popen(["sleep", "60"]))
        return study.study_name, started[-1]

    monkeypatch.setattr(SmartTuner, "start_study", start_study)
    yield started
    for process in started:
        process.kill()
        process.wait()


def text(request: Any) -> str:
    return request.text if hasattr(request, "text") else request.caption


def buttons(request: Any) -> dict[str, str]:
    """Button label → callback data of a request's inline keyboard."""
    markup = request.reply_markup
    return {} if markup is None else {button.text: button.callback_data
                                      for row in markup.inline_keyboard for button in row}


def running_study(tuner: SmartTuner, name: str = "run") -> int:
    """A study with a finished and a running trial; its storage id."""
    study = add_study(tuner, name, [
        trial(value=0.5),
        trial(TrialState.RUNNING, last_metrics={"epoch": 2, "val_loss": 0.61,
                                                "train_loss": 0.55, "objective": 0.62})])
    return study_id(tuner, study)


def study_id(tuner: SmartTuner, study: optuna.Study) -> int:
    return open_storage(tuner.config).get_study_id_from_name(study.study_name)


# --- commands --------------------------------------------------------------------------------

async def test_start_and_help_list_the_commands(harness: BotHarness) -> None:
    for command in ("/start", "/help"):
        [reply] = await harness.send(ALICE, command)
        assert "Smart Tuner" in reply.text
        for name in ("/tune", "/status", "/best", "/stop", "/trials", "/plot", "/models"):
            assert name in reply.text


@pytest.mark.parametrize("argument", ["abc", "0", "-3", "10000"])
async def test_tune_refuses_a_bad_number_of_trials(harness: BotHarness, workers: list,
                                                   argument: str) -> None:
    [reply] = await harness.send(ALICE, f"/tune {argument}")
    assert "Usage: /tune N" in reply.text
    assert "from 1 to 50" in reply.text
    assert workers == []


async def test_tune_refuses_a_study_that_cannot_work_in_one_line(harness: BotHarness,
                                                                tuner: SmartTuner) -> None:
    # The config's dataset folder does not exist: no study is created, no worker started.
    [reply] = await harness.send(ALICE, "/tune 3")
    assert reply.text.startswith("Cannot start a study: ")
    assert "corpus" in reply.text and "\n" not in reply.text
    assert tuner.studies() == []


async def test_tune_starts_a_study_then_refuses_a_second_one(
        harness: BotHarness, tuner: SmartTuner, workers: list) -> None:
    [reply] = await harness.send(ALICE, "/tune 3")
    assert "Started study <code>study-0</code>: 3 trials" in reply.text
    assert "learning_rate: 0.0001 … 0.01 (log)" in reply.text
    assert load_study(tuner.config, "study-0").user_attrs["n_trials"] == 3

    [reply] = await harness.send(BOB, "/tune")
    assert "already running" in reply.text
    assert "⏹ Stop" in buttons(reply)
    assert len(workers) == 1


async def test_tune_leaves_the_study_to_standing_workers_where_the_config_says(
        tmp_path: Path, workers: list) -> None:
    tuner = SmartTuner(write_config(tmp_path, start_worker=False), environ={})
    harness = BotHarness(tuner)
    [reply] = await harness.send(ALICE, "/tune 3")
    assert "Started study <code>study-0</code>: 3 trials" in reply.text
    assert "The standing workers take its trials" in reply.text
    assert workers == []  # no worker beside the bot
    # The study waits for the fleet: it is running, and a second /tune is refused.
    [reply] = await harness.send(BOB, "/tune")
    assert "already running" in reply.text


async def test_tune_without_n_uses_the_configured_budget(harness: BotHarness,
                                                         workers: list) -> None:
    [reply] = await harness.send(ALICE, "/tune")
    assert ": 4 trials" in reply.text


async def test_the_tune_reply_is_the_started_news(harness: BotHarness, tuner: SmartTuner,
                                                  workers: list) -> None:
    await harness.send(ALICE, "/tune 2")  # ALICE's chat is telegram.chat_id
    notifier = Notifier(harness.bot, harness.service, harness.state, tuner.config.telegram)
    await notifier.poll()
    assert len(harness.session.calls("sendMessage")) == 1  # the reply; no repeat
    assert "study:study-0:started" in harness.state.delivered


async def test_a_study_with_running_trials_blocks_tune(harness: BotHarness, tuner: SmartTuner,
                                                       workers: list) -> None:
    running_study(tuner)  # run by a worker elsewhere: its trial is running
    [reply] = await harness.send(ALICE, "/tune 2")
    assert "already running" in reply.text
    assert workers == []


async def test_a_study_nobody_works_on_does_not_block_tune(harness: BotHarness,
                                                           tuner: SmartTuner,
                                                           workers: list) -> None:
    add_study(tuner, "abandoned", [trial(value=0.5)])  # "running", but no trial, no worker
    [reply] = await harness.send(ALICE, "/tune 2")
    assert "Started study" in reply.text


async def test_status_shows_progress_and_refreshes_in_place(harness: BotHarness,
                                                            tuner: SmartTuner) -> None:
    [reply] = await harness.send(ALICE, "/status")
    assert "No study yet" in reply.text

    study_id = running_study(tuner)
    await harness.service.refresh_status()  # the notifier's poll
    [reply] = await harness.send(ALICE, "/status")
    assert "<code>run</code>: running" in reply.text
    assert "1 running, 1 complete" in reply.text
    assert "Best: 0.5 (trial 0)" in reply.text
    assert "Trial 1: epoch 2 — objective 0.62, val_loss 0.61, train_loss 0.55" in reply.text
    assert "Elapsed" in reply.text
    labels = buttons(reply)
    assert set(labels) == {"🔄 Refresh", "⏹ Stop"}

    edit, answer = await harness.press(ALICE, labels["🔄 Refresh"])
    assert edit.__api_method__ == "editMessageText" and edit.message_id == 42
    assert "Trial 1: epoch 2" in edit.text
    assert answer.__api_method__ == "answerCallbackQuery"
    assert harness.session.calls("editMessageText")[-1].text.startswith("📊 Study")
    assert study_id == keyboards.StudyButton.unpack(labels["🔄 Refresh"]).study


async def test_refresh_when_nothing_changed_is_not_an_error(harness: BotHarness,
                                                            tuner: SmartTuner) -> None:
    study_id = running_study(tuner)
    data = keyboards.StudyButton(action=keyboards.StudyAction.REFRESH, study=study_id).pack()
    harness.session.fail_next(400, "Bad Request: message is not modified: specified new "
                                   "message content and reply markup are exactly the same")
    edit, answer = await harness.press(ALICE, data)
    assert edit.__api_method__ == "editMessageText"  # refused by Telegram: nothing changed
    assert answer.__api_method__ == "answerCallbackQuery"
    assert answer.text == "Updated"


async def test_stop_asks_then_requests_once(harness: BotHarness, tuner: SmartTuner) -> None:
    [reply] = await harness.send(ALICE, "/stop")
    assert reply.text == "No study is running."

    running_study(tuner)
    [question] = await harness.send(ALICE, "/stop")
    assert "Stop study <code>run</code>?" in question.text
    labels = buttons(question)

    edit, answer = await harness.press(ALICE, labels["No, keep going"])
    assert "keeps running" in edit.text
    assert STOP_ATTR not in load_study(tuner.config, "run").user_attrs

    edit, answer = await harness.press(ALICE, labels["Yes, stop it"])
    assert "Stop requested for study <code>run</code>" in edit.text
    assert load_study(tuner.config, "run").user_attrs[STOP_ATTR]["by"] == f"telegram user {ALICE}"

    edit, answer = await harness.press(BOB, labels["Yes, stop it"])  # pressed twice
    assert "already stopping" in edit.text
    assert answer.text == "Already stopping"
    [reply] = await harness.send(ALICE, "/stop")
    assert reply.text == "Study run is already stopping."


async def test_the_stop_button_of_a_status_asks_first(harness: BotHarness,
                                                      tuner: SmartTuner) -> None:
    running_study(tuner)
    [status] = await harness.send(ALICE, "/status")
    question, answer = await harness.press(ALICE, buttons(status)["⏹ Stop"])
    assert question.__api_method__ == "sendMessage"
    assert answer.__api_method__ == "answerCallbackQuery"
    assert set(buttons(question)) == {"Yes, stop it", "No, keep going"}
    assert STOP_ATTR not in load_study(tuner.config, "run").user_attrs


async def test_best_shows_value_parameters_and_buttons(harness: BotHarness,
                                                       tuner: SmartTuner) -> None:
    [reply] = await harness.send(ALICE, "/best")
    assert reply.text == "No study yet. Start one with /tune N."

    add_study(tuner, "s", [trial(value=0.5), trial(value=0.3, learning_rate=2e-3,
                                                   mlflow_run_id="abc123")])
    [reply] = await harness.send(ALICE, "/best")
    assert "<b>0.3</b> (trial 1)" in reply.text
    assert "learning_rate  0.002" in reply.text
    assert "MLflow run <code>abc123</code>" in reply.text
    assert "🔊 Audio sample" in buttons(reply)


async def test_audio_button_without_a_sample_says_so(harness: BotHarness,
                                                     tuner: SmartTuner) -> None:
    study = add_study(tuner, "s", [trial(value=0.5)])
    data = keyboards.AudioButton(study=study_id(tuner, study), trial=0).pack()
    [answer] = await harness.press(ALICE, data)
    assert answer.text == "Trial 0 has no audio sample."


async def test_trials_lists_the_last_ten(harness: BotHarness, tuner: SmartTuner) -> None:
    add_study(tuner, "s", [trial(value=0.9 - n / 100, reason=f"reason <{n}>")
                           for n in range(12)])
    [reply] = await harness.send(ALICE, "/trials")
    assert "reason &lt;11&gt;" in reply.text
    assert "reason &lt;2&gt;" in reply.text
    assert "reason &lt;1&gt;" not in reply.text


async def test_plot_sends_the_learning_curves_and_the_anytime_curve(
        harness: BotHarness, tuner: SmartTuner) -> None:
    add_study(tuner, "s", [trial(value=0.5), trial(TrialState.PRUNED)])
    requests = await harness.send(ALICE, "/plot")
    curves, anytime = [r for r in requests if r.__api_method__ == "sendPhoto"]
    for photo in (curves, anytime):
        assert photo.photo.data.startswith(b"\x89PNG")
        assert len(photo.caption) <= CAPTION_LIMIT
    assert curves.caption.startswith("Learning curves") and "compute" not in curves.caption
    assert "epochs its trials spent" in anytime.caption


# --- strangers and bad buttons -----------------------------------------------------------------

async def test_a_stranger_is_refused_once_then_ignored(harness: BotHarness,
                                                       tuner: SmartTuner) -> None:
    study_id = running_study(tuner)
    [refusal] = await harness.send(MALLORY, "/status")
    assert refusal.text == PRIVATE and refusal.chat_id == MALLORY

    stop = keyboards.StopButton(study=study_id, confirm=True).pack()
    [answer] = await harness.press(MALLORY, stop)  # so their client stops waiting
    assert answer.__api_method__ == "answerCallbackQuery" and answer.text is None
    assert await harness.send(MALLORY, "/tune 5") == []
    assert STOP_ATTR not in load_study(tuner.config, "run").user_attrs


async def test_a_strangers_button_is_answered_with_the_refusal(harness: BotHarness,
                                                               tuner: SmartTuner) -> None:
    study_id = running_study(tuner)
    data = keyboards.StudyButton(action=keyboards.StudyAction.REFRESH, study=study_id).pack()
    [answer] = await harness.press(MALLORY, data)
    assert answer.__api_method__ == "answerCallbackQuery" and answer.text == PRIVATE
    assert await harness.send(MALLORY, "/start") == []


@pytest.mark.parametrize("data", ["st:r:999", "sp:999:1", "au:999:0"])
async def test_buttons_for_a_study_that_does_not_exist_are_answered(
        harness: BotHarness, tuner: SmartTuner, data: str) -> None:
    running_study(tuner)
    [answer] = await harness.press(ALICE, data)
    assert answer.__api_method__ == "answerCallbackQuery"
    assert "does not exist" in answer.text


async def test_an_error_on_an_expired_button_is_said_in_the_chat(harness: BotHarness) -> None:
    harness.session.fail_next(400, "Bad Request: query is too old and response timeout "
                                   "expired or query ID is invalid",
                              api_method="answerCallbackQuery")
    answer, message = await harness.press(ALICE, "st:r:999")
    assert answer.__api_method__ == "answerCallbackQuery"
    assert message.__api_method__ == "sendMessage" and message.chat_id == ALICE
    assert message.text == "That study does not exist (any more)."


@pytest.mark.parametrize("data", ["st:x:1", "st:r", "sp:1:maybe", "md:p:v1", "nonsense", ":"])
async def test_forged_callback_data_is_answered_politely(harness: BotHarness,
                                                         data: str) -> None:
    [answer] = await harness.press(ALICE, data)
    assert answer.text == STALE_BUTTON


async def test_an_unexpected_error_is_reported_not_raised(harness: BotHarness,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any) -> None:
        raise RuntimeError("storage exploded")

    monkeypatch.setattr(harness.service, "status", broken)
    [reply] = await harness.send(ALICE, "/status")
    assert reply.text == FAILED


def test_callback_data_fits_in_64_bytes() -> None:
    big = 2**63 - 1
    packed = [
        keyboards.StudyButton(action=keyboards.StudyAction.REFRESH, study=big).pack(),
        keyboards.StopButton(study=big, confirm=False).pack(),
        keyboards.ModelButton(action=keyboards.ModelAction.PROMOTE, version=big).pack(),
        keyboards.AudioButton(study=big, trial=big).pack(),
    ]
    assert all(len(data.encode()) <= 64 for data in packed)
