"""A hostile or careless chat: overlong arguments, forged and stale buttons, unknown
commands, groups, and a second bot on the same state folder."""

import asyncio
import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from optuna.trial import TrialState

from bot import app
from bot.handlers.fallback import STALE_BUTTON
from bot.messages import MESSAGE_LIMIT
from bot.notifier import Notifier
from bot.state import StateFolderInUse, hold_state_folder
from tests.bot_support import ALICE, MALLORY, TOKEN, BotHarness, add_study, trial, write_config
from tests.deadlines import scaled
from tuner_core import SmartTuner
from tuner_core.storage import open_storage
from tuner_core.trial import runner

GROUP = -100123


def study_id(tuner: SmartTuner, name: str) -> int:
    return open_storage(tuner.config).get_study_id_from_name(name)


def answers(requests: list) -> list:
    return [r for r in requests if r.__api_method__ == "answerCallbackQuery"]


# --- item 11: user input quoted in a reply is cut to fit ---------------------------------------

@pytest.mark.parametrize("argument", ["x" * 4000, "1" * 4000])
async def test_an_overlong_argument_gets_a_usage_reply_that_fits(harness: BotHarness,
                                                                 argument: str) -> None:
    [reply] = await harness.send(ALICE, f"/tune {argument}")
    assert "Usage: /tune N" in reply.text
    assert len(reply.text) <= MESSAGE_LIMIT
    assert "…" in reply.text


# --- item 12: every field of every button is checked; each press answered once ------------------

async def test_no_for_a_study_that_does_not_exist_edits_nothing(harness: BotHarness,
                                                                tuner: SmartTuner) -> None:
    add_study(tuner, "s", [trial(value=0.5)])
    requests = await harness.press(ALICE, "sp:9999:0")
    assert [r.__api_method__ for r in requests] == ["answerCallbackQuery"]
    assert "does not exist" in requests[0].text


@pytest.mark.parametrize("data", ["st:r:99999999999999999999999", "st:r:-1", "sp:-5:1",
                                  "au:1:99999999999999999999", "md:e:9223372036854775808"])
async def test_numbers_out_of_the_storages_range_are_stale_buttons(harness: BotHarness,
                                                                   tuner: SmartTuner,
                                                                   data: str) -> None:
    add_study(tuner, "s", [trial(value=0.5)])
    [answer] = await harness.press(ALICE, data)
    assert answer.__api_method__ == "answerCallbackQuery" and answer.text == STALE_BUTTON


async def test_every_button_press_is_answered_exactly_once(harness: BotHarness,
                                                           tuner: SmartTuner) -> None:
    add_study(tuner, "s", [trial(value=0.5), trial(TrialState.RUNNING)])
    sid = study_id(tuner, "s")
    for data in (f"st:r:{sid}", f"st:s:{sid}", f"sp:{sid}:0", f"sp:{sid}:1", f"sp:{sid}:1",
                 f"au:{sid}:0", f"au:{sid}:7", "st:r:999", "md:x:1", "nonsense"):
        assert len(answers(await harness.press(ALICE, data))) == 1, data


async def test_a_strangers_every_press_is_answered_without_more_words(
        harness: BotHarness, tuner: SmartTuner) -> None:
    add_study(tuner, "s", [trial(value=0.5)])
    data = f"st:r:{study_id(tuner, 's')}"
    first, second = await harness.press(MALLORY, data), await harness.press(MALLORY, data)
    assert [a.__api_method__ for a in first + second] == ["answerCallbackQuery"] * 2
    assert second[0].text is None


# --- item 15: groups, unknown commands, the token kept from children ---------------------------

async def test_a_group_does_not_become_a_notification_target(tmp_path: Path) -> None:
    tuner = SmartTuner(write_config(tmp_path, chat_id=None), environ={})
    add_study(tuner, "s", [trial(value=0.5)])
    harness = BotHarness(tuner)
    await harness.feed_message(ALICE, "/status", chat_id=GROUP, chat_type="group")
    notifier = Notifier(harness.bot, harness.service, harness.state, tuner.config.telegram)
    await notifier.poll()
    assert harness.state.chats == set()
    assert harness.session.calls("sendMessage")[-1].chat_id == GROUP  # only the reply

    await harness.send(ALICE, "/status")  # in a private chat: that one hears the news
    await notifier.poll()
    assert harness.state.chats == {ALICE}


async def test_a_configured_group_gets_the_notifications(tmp_path: Path) -> None:
    tuner = SmartTuner(write_config(tmp_path, chat_id=GROUP), environ={})
    add_study(tuner, "s", [trial(value=0.5)])
    harness = BotHarness(tuner)
    notifier = Notifier(harness.bot, harness.service, harness.state, tuner.config.telegram)
    await notifier.poll()
    assert {r.chat_id for r in harness.session.calls("sendMessage")} == {GROUP}


@pytest.mark.parametrize("text", ["/TUNE 2", "/frobnicate", "/Status"])
async def test_an_unknown_command_gets_a_hint_to_help(harness: BotHarness, text: str) -> None:
    [reply] = await harness.send(ALICE, text)
    assert "/help" in reply.text and text.split()[0] in reply.text


async def test_a_command_for_another_bot_in_a_group_is_left_alone(harness: BotHarness) -> None:
    assert await harness.feed_message(ALICE, "/tune@other_bot", chat_id=GROUP,
                                      chat_type="group") == []


def test_the_workers_of_the_bot_do_not_inherit_its_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(app.TOKEN_VARIABLE, TOKEN)
    app.hide_token_from_children()
    assert app.TOKEN_VARIABLE not in os.environ


def test_trainers_do_not_inherit_the_token(tuner: SmartTuner, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(app.TOKEN_VARIABLE, TOKEN)  # a tuner run by hand, token exported
    started: list[dict[str, str]] = []
    monkeypatch.setattr(runner, "TrainerProcess",
                        lambda args, run_dir, python, cwd, env, launcher, program:
                        started.append(env))
    trial_runner = runner.TrialRunner(tuner.config, "s")
    trial_runner._start_trainer({}, tmp_path / "run", None, threads=1)
    [env] = started
    assert app.TOKEN_VARIABLE not in env and env["PATH"] == os.environ["PATH"]
    assert app.TOKEN_VARIABLE not in trial_runner.renders._env  # nor its plot renderer
    trial_runner.close()


# --- item 10: one bot per state folder -----------------------------------------------------------

def test_a_second_bot_on_the_same_state_folder_is_refused(tmp_path: Path) -> None:
    with (hold_state_folder(tmp_path),
          pytest.raises(StateFolderInUse, match=f"pid {os.getpid()}"),
          hold_state_folder(tmp_path)):
        pass
    with hold_state_folder(tmp_path):  # released with its holder
        pass


# --- item 14: the audio sample is a voice message --------------------------------------------

async def test_the_audio_sample_is_sent_as_a_voice_message(
        harness: BotHarness, tuner: SmartTuner, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    wav = tmp_path / "sample_e0003.wav"
    soundfile.write(wav, np.zeros(22050 * 2, dtype=np.float32), 22050)  # 2 s at 22.05 kHz
    monkeypatch.setattr(SmartTuner, "audio_sample", lambda self, study, trial: wav)
    add_study(tuner, "s", [trial(value=0.5)])
    answer, voice = await harness.press(ALICE, f"au:{study_id(tuner, 's')}:0")
    assert answer.__api_method__ == "answerCallbackQuery"
    assert voice.__api_method__ == "sendVoice" and voice.duration == 2
    ogg = voice.voice.data
    assert ogg.startswith(b"OggS") and b"OpusHead" in ogg
    info = soundfile.info(io.BytesIO(ogg))
    assert (info.format, info.subtype, info.samplerate) == ("OGG", "OPUS", 48000)


# --- item 13: a stopping bot cancels the work in hand and says so ---------------------------------

async def test_stopping_cancels_an_export_in_hand_and_tells_the_chat(
        harness: BotHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    exporting = asyncio.Event()

    async def endless_export(version: int) -> None:
        exporting.set()
        await asyncio.Event().wait()  # an export that would outlast any shutdown

    async def known(version: int) -> None:
        return None

    monkeypatch.setattr(harness.service, "require_version", known)
    monkeypatch.setattr(harness.service, "export", endless_export)
    press = asyncio.create_task(harness.press(ALICE, "md:e:1", label="📦 Export v1"))
    await asyncio.wait_for(exporting.wait(), timeout=scaled(30))
    await asyncio.wait_for(harness.dispatcher["updates_in_hand"].finish(0.1, 5),
                           timeout=scaled(30))
    assert press.done()
    texts = [r.text for r in harness.session.calls("sendMessage")]
    # It says that the bot is stopping (not "restarting": it may not come back) and what
    # was cancelled: the pressed button, by its label.
    assert texts == ["⏹ The bot is stopping, so your press of '📦 Export v1' was cancelled. "
                     "Ask again once it is back."]
    assert [r.text for r in harness.session.calls("answerCallbackQuery")] == ["Exporting…"]


async def test_an_export_is_a_child_process_that_a_cancel_ends(
        harness: BotHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[asyncio.subprocess.Process] = []
    spawn = asyncio.create_subprocess_exec

    async def sleeping_export(*command: str, **options: object) -> asyncio.subprocess.Process:
        started.append(await spawn("sleep", "600", **options))
        return started[-1]

    monkeypatch.setattr(asyncio, "create_subprocess_exec", sleeping_export)
    export = asyncio.create_task(harness.service.export(1))
    deadline = time.monotonic() + scaled(30)  # the export runs as a child process
    while not started and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert started
    export.cancel()
    with pytest.raises(asyncio.CancelledError):
        await export
    assert started[0].returncode is not None  # ended, not left running
