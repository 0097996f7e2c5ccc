"""The notifier: study news from the storage to the chat, in order, each once."""

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from bot import messages
from bot.jobs import create_scheduler
from bot.notifier import Notifier
from bot.state import STATE_FILE
from tests.bot_support import (
    ALICE,
    NETWORK_DOWN,
    BotHarness,
    add_study,
    trial,
    write_config,
)
from tests.deadlines import scaled
from tuner_core import SmartTuner
from tuner_core.storage import FINISHED_ATTR


def make_tuner(tmp_path: Path, **telegram: object) -> SmartTuner:
    return SmartTuner(write_config(tmp_path, **telegram), environ={})


def start(tuner: SmartTuner) -> tuple[BotHarness, Notifier]:
    """A bot (re)started over the tuner's state folder, and its notifier."""
    harness = BotHarness(tuner)
    return harness, Notifier(harness.bot, harness.service, harness.state, tuner.config.telegram)


def sent(harness: BotHarness) -> list[str]:
    """The texts of the messages sent successfully so far, in order."""
    return [request.text for request in harness.session.calls("sendMessage")]


@pytest.fixture
def tuner(tmp_path: Path) -> SmartTuner:
    return make_tuner(tmp_path)


async def test_news_is_sent_once_and_in_order(tuner: SmartTuner) -> None:
    study = add_study(tuner, "s", [trial(value=0.5)])
    harness, notifier = start(tuner)
    await notifier.poll()
    texts = sent(harness)
    assert len(texts) == 3
    assert texts[0].startswith("🚀 Study <code>s</code> started: 4 trials")
    assert texts[1].startswith("✅ Trial 0 of <code>s</code> completed")
    assert texts[2].startswith("🏆 New best in <code>s</code>: <b>0.5</b> by trial 0")
    assert {r.chat_id for r in harness.session.calls("sendMessage")} == {ALICE}

    await notifier.poll()
    assert len(sent(harness)) == 3

    study.add_trial(trial(TrialState.PRUNED, criterion="pruner", reason="worse than median",
                          recommendation="move on", stop_epoch=2))
    await notifier.poll()
    assert sent(harness)[3].startswith("✂️ Trial 1 of <code>s</code> pruned by pruner at epoch 2")
    assert "💡 move on" in sent(harness)[3]


async def test_a_restarted_bot_neither_repeats_nor_drops(tuner: SmartTuner) -> None:
    study = add_study(tuner, "s", [trial(value=0.5)])
    _, notifier = start(tuner)
    await notifier.poll()
    saved = json.loads((tuner.config.state_dir / STATE_FILE).read_text())
    assert "trial:s:0:finished" in saved["delivered"]

    study.add_trial(trial(value=0.7))  # while the bot was down
    harness, notifier = start(tuner)
    await notifier.poll()
    [text] = sent(harness)
    assert text.startswith("✅ Trial 1 of <code>s</code> completed")


async def test_a_switched_off_kind_is_marked_delivered_unsent(tmp_path: Path) -> None:
    tuner = make_tuner(tmp_path, notifications={"trial_complete": False,
                                                "optimization_updates": False})
    study = add_study(tuner, "s", [trial(value=0.5)])
    harness, notifier = start(tuner)
    await notifier.poll()
    [text] = sent(harness)
    assert "started" in text
    assert {"trial:s:0:finished", "trial:s:0:best"} <= harness.state.delivered

    study.set_user_attr("end_reason", "all trials done")
    study.set_user_attr(FINISHED_ATTR, time.time())
    await notifier.poll()
    assert "finished: all trials done" in sent(harness)[-1]


async def test_the_first_start_skips_the_history_of_finished_studies(tuner: SmartTuner) -> None:
    add_study(tuner, "old", [trial(value=0.5)], end_reason="all trials done")
    add_study(tuner, "new", [trial(value=0.5)])
    harness, notifier = start(tuner)
    await notifier.poll()
    texts = sent(harness)
    assert len(texts) == 3
    assert all("<code>new</code>" in text for text in texts)
    assert "study:old:finished" in harness.state.delivered


async def test_an_outage_delays_the_news_without_losing_it(tuner: SmartTuner) -> None:
    add_study(tuner, "s", [trial(value=0.5)])
    harness, notifier = start(tuner)
    # Longer than every retry of the first send: the backoff's jitter makes them 6 or 7.
    harness.session.fail_next(502, "Bad Gateway", times=20)
    await notifier.poll()
    assert not {"study:s:started", "trial:s:0:finished"} & harness.state.delivered
    tries = len(harness.session.calls("sendMessage"))
    assert tries >= 6

    harness.session.recover()  # Telegram is back
    await notifier.poll()
    texts = sent(harness)[tries:]
    assert [text.split(" ")[1] for text in texts] == ["Study", "Trial", "New"]


async def test_a_message_telegram_refuses_is_skipped(tuner: SmartTuner) -> None:
    add_study(tuner, "s", [trial(value=0.5)])
    harness, notifier = start(tuner)
    harness.session.fail_next(400, "Bad Request: chat not found")
    await notifier.poll()
    assert len(sent(harness)) == 3  # the refused one, then the two others
    assert {"study:s:started", "trial:s:0:finished", "trial:s:0:best"} <= harness.state.delivered


async def test_without_a_chat_id_the_news_goes_to_allowed_users_who_wrote(
        tmp_path: Path) -> None:
    tuner = make_tuner(tmp_path, chat_id=None)
    study = add_study(tuner, "s", [trial(value=0.5)])
    harness, notifier = start(tuner)
    await notifier.poll()  # nobody to tell yet
    assert sent(harness) == []

    await harness.send(ALICE, "/start")
    study.add_trial(trial(value=0.9))
    await notifier.poll()
    news = [r for r in harness.session.calls("sendMessage") if "Trial 1" in r.text]
    assert [r.chat_id for r in news] == [ALICE]
    harness, _ = start(tuner)
    assert harness.state.chats == {ALICE}


async def test_the_end_of_a_study_brings_curves_and_a_promote_button(tuner: SmartTuner) -> None:
    study = add_study(tuner, "s", [trial(value=0.5, registered_version="3")])
    harness, notifier = start(tuner)
    await notifier.poll()
    study.set_user_attr("end_reason", "all trials done")
    study.set_user_attr(FINISHED_ATTR, time.time())
    await notifier.poll()

    end = harness.session.calls("sendMessage")[-1]
    assert "🏁 Study <code>s</code> finished: all trials done." in end.text
    assert "learning_rate  0.001" in end.text
    [[button]] = end.reply_markup.inline_keyboard
    assert button.text == "🏆 Promote v3 to champion" and button.callback_data == "md:p:3"
    [photo] = harness.session.calls("sendPhoto")
    assert photo.photo.data.startswith(b"\x89PNG")


async def test_the_metrics_summary_shows_the_running_study(tuner: SmartTuner) -> None:
    harness, notifier = start(tuner)
    await notifier.summary()
    assert harness.session.requests == []  # nothing runs

    add_study(tuner, "s", [trial(value=0.5), trial(TrialState.RUNNING)])
    await notifier.summary()
    [status] = harness.session.calls("sendMessage")
    assert "📊 Study <code>s</code>: running" in status.text
    assert len(harness.session.calls("sendPhoto")) == 1


async def test_the_scheduler_polls_in_the_bots_loop(tmp_path: Path) -> None:
    tuner = make_tuner(tmp_path, poll_interval_s=0.05,
                       notifications={"metrics_summary": True})
    add_study(tuner, "s", [trial(value=0.5)])
    harness, notifier = start(tuner)
    scheduler = create_scheduler(notifier, tuner.config.telegram)
    assert {job.id for job in scheduler.get_jobs()} == {"notifications", "metrics_summary"}
    scheduler.start()
    try:
        deadline = time.monotonic() + scaled(5)
        while len(sent(harness)) != 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await notifier.close(timeout=5)
        scheduler.shutdown(wait=False)
    assert len(sent(harness)) == 3


async def test_a_poll_cut_short_by_stopping_is_one_info_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 22, item 14: APScheduler logged the cancelled job as an ERROR with a
    CancelledError traceback."""
    caplog.set_level(logging.INFO)
    harness, notifier = start(make_tuner(tmp_path))
    polling = asyncio.Event()

    async def endless_poll() -> None:
        polling.set()
        await asyncio.Event().wait()  # a storage read that outlasts the shutdown

    notifier.poll = endless_poll  # type: ignore[method-assign]
    scheduler = create_scheduler(notifier, harness.service.config.telegram)
    scheduler.start()
    await asyncio.wait_for(polling.wait(), timeout=scaled(10))
    scheduler.shutdown(wait=False)  # as the bot does on SIGTERM
    for _ in range(10):  # let the cancelled job and APScheduler's callback run
        await asyncio.sleep(0)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    [cancelled] = [r for r in caplog.records if "cancelled" in r.getMessage()]
    assert cancelled.levelno == logging.INFO and cancelled.exc_info is None
    assert cancelled.getMessage().startswith("stopping: endless_poll was cancelled")


async def test_a_message_on_its_way_when_the_bot_dies_is_repeated_once_and_marked(
        tuner: SmartTuner) -> None:
    """Issue 22, item 13: the window is the whole round trip, not a millisecond."""
    add_study(tuner, "s", [trial(value=0.5)])
    harness, notifier = start(tuner)
    on_its_way = asyncio.Event()
    answer = harness.session.make_request

    async def second_message_never_answered(bot, method, timeout=None):
        if method.__api_method__ == "sendMessage" and len(sent(harness)) == 1:
            harness.session.requests.append(method)  # Telegram got it; the answer never comes
            on_its_way.set()
            await asyncio.Event().wait()
        return await answer(bot, method, timeout)

    harness.session.make_request = second_message_never_answered  # type: ignore[method-assign]
    poll = asyncio.create_task(notifier.poll())
    await asyncio.wait_for(on_its_way.wait(), timeout=scaled(10))
    poll.cancel()  # the bot dies with the request out: nothing after it runs
    with pytest.raises(asyncio.CancelledError):
        await poll
    saved = json.loads((tuner.config.state_dir / STATE_FILE).read_text())
    assert saved["sending"] == ["trial:s:0:finished", ALICE, 0, True]

    harness, notifier = start(tuner)  # restarted
    await notifier.poll()
    await notifier.poll()
    texts = sent(harness)
    assert texts[0] == messages.IN_DOUBT
    assert texts[1].startswith("✅ Trial 0 of <code>s</code> completed")
    assert texts[2].startswith("🏆 New best in <code>s</code>")
    assert len(texts) == 3


async def test_a_message_without_an_answer_is_repeated_with_the_note(tuner: SmartTuner) -> None:
    add_study(tuner, "s", [trial(value=0.5)])
    harness, notifier = start(tuner)
    harness.session.fail_next(NETWORK_DOWN, "no route to host", times=20)
    await notifier.poll()
    tries = len(sent(harness))
    harness.session.recover()
    await notifier.poll()
    again = sent(harness)[tries:]
    assert again[0] == messages.IN_DOUBT  # the request went out; did it arrive?
    assert again[1].startswith("🚀 Study <code>s</code> started")
    assert messages.IN_DOUBT not in again[2:]
