"""Double-instance drills: the real run_bot.py twice against the loopback Bot API.

* A second bot on the same state folder refuses to start; the first goes on alone.
* A second bot elsewhere (its own state folder) on the same token: Telegram answers one
  of the two pollers 409 Conflict; that one tells the chat (once) and its log so, and
  stops, instead of both polling by turns and both answering.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.bot_support import ALICE, write_config
from tests.deadlines import scaled
from tests.e2e.bot_process import start_bot, stop
from tests.e2e.fake_telegram import FakeTelegram

START_TIMEOUT_S = 90  # a cold start imports optuna and aiogram on a busy machine


def status_replies(fake: FakeTelegram) -> int:
    return sum("No study yet" in m.text_or_caption for m in fake.messages_to(ALICE))


def assert_one_answer(fake: FakeTelegram) -> None:
    """``/status`` from Alice gets exactly one reply."""
    fake.user_sends(ALICE, "/status")
    fake.wait_for(lambda: status_replies(fake), timeout=60)
    time.sleep(3)  # a second bot, if one still listened, would have answered by now
    assert status_replies(fake) == 1


def test_a_second_bot_on_the_same_state_folder_refuses_to_start(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with FakeTelegram() as fake:
        fake.add_user(ALICE)
        first = start_bot(fake, config, tmp_path / "first.out")
        try:
            fake.wait_for(lambda: fake.calls_to("setMyCommands"), timeout=START_TIMEOUT_S)
            second = start_bot(fake, config, tmp_path / "second.out")
            assert second.wait(timeout=scaled(START_TIMEOUT_S)) == 1
            output = (tmp_path / "second.out").read_text()
            assert f"another bot (pid {first.pid}) is running on the state folder" in output
            assert first.poll() is None
            assert_one_answer(fake)
        finally:
            stop(first, tmp_path / "first.out")


def test_a_second_bot_on_the_same_token_ends_one_of_them(tmp_path: Path) -> None:
    folders = [tmp_path / "here", tmp_path / "elsewhere"]
    for folder in folders:
        folder.mkdir()
    configs = [write_config(folder) for folder in folders]
    logs = [tmp_path / "here.out", tmp_path / "elsewhere.out"]
    with FakeTelegram() as fake:
        fake.add_user(ALICE)
        bots = [start_bot(fake, configs[0], logs[0])]
        try:
            fake.wait_for(lambda: fake.calls_to("setMyCommands"), timeout=START_TIMEOUT_S)
            bots.append(start_bot(fake, configs[1], logs[1]))
            # The second one's getUpdates ends the first one's with 409 Conflict.
            ended = fake.wait_for(lambda: [n for n, bot in enumerate(bots)
                                           if bot.poll() is not None],
                                  timeout=START_TIMEOUT_S)
            assert len(ended) == 1
            [loser], [winner] = ended, {0, 1} - set(ended)
            assert bots[loser].returncode == 1
            assert ("another bot is polling Telegram with the same token"
                    in logs[loser].read_text())
            # The chat is told once which bot stopped (host, state folder) and why.
            [told] = [m.text_or_caption for m in fake.messages_to(ALICE)
                      if "has stopped" in m.text_or_caption]
            assert told.startswith(f"🛑 The bot on {socket.gethostname()} (state folder "
                                   f"{(folders[loser] / 'state').resolve()}) has stopped: "
                                   "another bot is polling Telegram with the same token")
            assert_one_answer(fake)
            assert bots[winner].poll() is None
        finally:
            for bot, log in zip(bots, logs, strict=False):
                stop(bot, log)
