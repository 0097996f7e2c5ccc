"""Fault drills: the real run_bot.py against the loopback Bot API, while a study runs.

* The bot is killed with SIGKILL mid-study and started again: the study goes on in its
  worker, and the notifications resume from the persisted cursor, none lost, none twice.
* Telegram is down (5xx) for a minute, then answers with a storm of 429s: the study
  finishes during the outage all the same, every notification arrives exactly once
  afterwards, and the bot is still polling and answering commands.

A drill's verdict on the chat compares the messages it got with the study's whole feed
(:func:`tuner_core.events.collect`), rendered as the notifier renders it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

from bot import messages
from tests.conftest import TEST_HPARAMS
from tests.deadlines import scaled
from tests.e2e.bot_process import start_bot, stop
from tests.e2e.fake_telegram import FakeTelegram, parse_html
from tests.test_tuner import write_config
from tuner_core import SmartTuner
from tuner_core.reporting.events import Kind, collect, study_started_id
from tuner_core.storage import open_storage

ALICE = 1001
OUTAGE_S = 60  # the drill: Telegram answers 5xx for a minute
STUDY_TIMEOUT_S = 300
OVERLAP_S = 5  # each 5xx window outlasts the next by this much: no gap if a check is slow


def drill_tuner(tmp_path: Path, corpus: Path, mel_cache: Path) -> SmartTuner:
    """A tiny study whose trials all stop early after two epochs; news polled every second."""
    config = write_config(
        tmp_path, corpus, mel_cache,
        trainer={"hparams": {**TEST_HPARAMS, "epochs": 50}},
        early_stopping={"patience": {"type": "patience", "patience": 1, "min_delta": 100.0}},
        telegram={"enabled": True, "allowed_users": [ALICE], "chat_id": ALICE,
                  "poll_interval_s": 1})
    return SmartTuner(config, environ={})


class BotUnderDrill:
    """The fake Bot API, where Alice is a user, and run_bot.py against it; leaving the
    ``with`` block stops the bot with SIGTERM and expects a clean exit.

    The bot's output is appended to ``log``.
    """

    def __init__(self, tuner: SmartTuner, log: Path):
        self.tuner = tuner
        self.log = log
        self.fake = FakeTelegram()
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BotUnderDrill:
        self.fake.__enter__()
        self.fake.add_user(ALICE)
        self.start()
        self.fake.wait_for(lambda: self.fake.calls_to("setMyCommands"), timeout=60)
        return self

    def start(self) -> None:
        self.process = start_bot(self.fake, self.tuner.config_path, self.log)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=scaled(30))

    def __exit__(self, *exc_info: object) -> None:
        try:
            stop(self.process, self.log)  # a failed drill may have left it dead
        finally:
            self.fake.__exit__(*exc_info)


def eventually(condition: Callable[[], bool], what: str,
               timeout: float = STUDY_TIMEOUT_S) -> None:
    """Wait for ``condition``, checked twice a second: the storage is read by the worker
    and the bot at the same time, and the CPUs are busy training."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.5)


def tune(fake: FakeTelegram, tuner: SmartTuner, n_trials: int) -> str:
    """Alice's ``/tune n_trials``; the new study's name once the bot confirmed it."""
    fake.user_sends(ALICE, f"/tune {n_trials}")
    fake.wait_for(lambda: fake.find_message(ALICE, "Started study"), timeout=60)
    (study,) = [s["study_name"] for s in tuner.studies()]
    return study


def delivered(tuner: SmartTuner) -> set[str]:
    """The notifier's persisted cursor: the ids in bot_state.json (replaced atomically)."""
    path = tuner.config.state_dir / "bot_state.json"
    return set(json.loads(path.read_text())["delivered"]) if path.exists() else set()


def expected_chat(tuner: SmartTuner, study: str) -> list[str]:
    """Every message the study's feed should have brought, in order, as the chat shows
    them: the notifications' texts (and the final learning curves' caption), except the
    study's start, which the reply to /tune told."""
    expected = []
    for notification in collect(open_storage(tuner.config), {study_started_id(study)}):
        assert notification.study == study
        for piece in messages.split_message(messages.notification_text(notification)):
            expected.append(parse_html(piece)[0])
        if notification.kind is Kind.TRAINING_COMPLETE:
            expected.append(parse_html(messages.plot_caption(
                study, notification.facts["best_trial"]))[0])
    return expected


def assert_feed_arrived_exactly_once(news: list[str], tuner: SmartTuner, study: str) -> None:
    """``news``, the chat's messages after the reply to /tune, is the study's whole feed:
    each message once, in order; nothing missing, nothing repeated."""
    assert news == expected_chat(tuner, study)
    # The same, independently of the rendering: each trial's end once, the study's end once.
    for trial in range(tuner.status(study)["n_trials"]):
        assert sum(f"Trial {trial} of {study} stopped early by patience at epoch 2" in t
                   for t in news) == 1, news
    assert sum(f"Study {study} finished: all trials done" in t for t in news) == 1, news


def assert_all_trials_done(tuner: SmartTuner, study: str, n_trials: int) -> None:
    status = tuner.status(study)
    assert status["state"] == "finished" and status["end_reason"] == "all trials done"
    assert status["counts"]["COMPLETE"] == n_trials == status["n_trials"], status


def test_a_bot_killed_mid_study_resumes_its_notifications(corpus, mel_cache, tmp_path):
    tuner = drill_tuner(tmp_path, corpus, mel_cache)
    with BotUnderDrill(tuner, tmp_path / "bot.out") as bot:
        fake = bot.fake
        study = tune(fake, tuner, 2)

        # Killed once the first trial's news is out and saved, while trial 1 trains.
        eventually(lambda: f"trial:{study}:0:best" in delivered(tuner),
                   "trial 0's news delivered")
        bot.kill()

        # The worker goes on without the bot; trial 1's news piles up meanwhile.
        eventually(lambda: [t["state"] for t in tuner.trials(study)][1:2] == ["COMPLETE"],
                   "trial 1 complete while the bot is down")
        bot.start()
        fake.wait_for(lambda: fake.find_message(ALICE, "Learning curves of"),
                      timeout=STUDY_TIMEOUT_S)

    assert_all_trials_done(tuner, study, 2)
    reply, *news = [m.text_or_caption for m in fake.messages_to(ALICE)]
    assert reply.startswith("🚀 Started study"), reply
    assert_feed_arrived_exactly_once(news, tuner, study)


def test_a_telegram_outage_delays_the_news_not_the_study(corpus, mel_cache, tmp_path):
    tuner = drill_tuner(tmp_path, corpus, mel_cache)
    with BotUnderDrill(tuner, tmp_path / "bot.out") as bot:
        fake = bot.fake
        study = tune(fake, tuner, 2)

        # Every call answers 502 for a minute and, should the study take longer, until
        # it has finished (overlapping windows make one unbroken outage): the study
        # must finish while the chat is unreachable.
        outage_ends = time.monotonic() + OUTAGE_S
        deadline = outage_ends + scaled(STUDY_TIMEOUT_S)
        while time.monotonic() < outage_ends or tuner.status(study)["state"] != "finished":
            assert time.monotonic() < deadline, "the study did not finish during the outage"
            fake.fail_for(scaled(OVERLAP_S), status=HTTPStatus.BAD_GATEWAY)
            time.sleep(1)
        # Then a storm of 429s (15 s or more), queued behind the last 502s so that no
        # call slips through between.
        fake.fail_for(scaled(OVERLAP_S) + 15, status=HTTPStatus.TOO_MANY_REQUESTS, retry_after=1)

        fake.wait_for(lambda: fake.find_message(ALICE, "Learning curves of"),
                      timeout=STUDY_TIMEOUT_S)
        # The bot lived through it: still running, polling, and answering commands.
        assert bot.process.poll() is None, bot.log.read_text()[-3000:]
        fake.user_sends(ALICE, "/status")
        fake.wait_for(lambda: fake.find_message(ALICE, f"Study {study}: finished"),
                      timeout=60)

    assert_all_trials_done(tuner, study, 2)
    # The drill did hit the notifier and the polling with both kinds of failure.
    for method, failures in (("sendMessage", {HTTPStatus.BAD_GATEWAY,
                                              HTTPStatus.TOO_MANY_REQUESTS}),
                             ("getUpdates", {HTTPStatus.BAD_GATEWAY})):
        served = {call.status for call in fake.calls_to(method)}
        assert failures | {HTTPStatus.OK} <= served, (method, served)
    reply, *news, status = [m.text_or_caption for m in fake.messages_to(ALICE)]
    assert reply.startswith("🚀 Started study"), reply
    assert status.startswith(f"📊 Study {study}: finished"), status
    assert_feed_arrived_exactly_once(news, tuner, study)
