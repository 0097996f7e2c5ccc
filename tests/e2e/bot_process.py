"""The real run_bot.py, started as the end-to-end drills start it: against the loopback
Bot API (:mod:`tests.e2e.fake_telegram`), with the fake's token."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.deadlines import scaled
from tests.e2e.fake_telegram import FakeTelegram

ROOT = Path(__file__).resolve().parents[2]


def start_bot(fake: FakeTelegram, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``run_bot.py --config config`` against ``fake``; its output is appended to ``log``:
    a pipe that nobody reads during a long drill could fill up and stall the bot."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM_")}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "run_bot.py", "--config", str(config), "--api-server", fake.url],
            cwd=ROOT, env=environ | {"TELEGRAM_BOT_TOKEN": fake.token},
            stdout=out, stderr=subprocess.STDOUT)


def stop(bot: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM the bot, if it still runs, and expect a clean exit."""
    if bot.poll() is None:
        bot.send_signal(signal.SIGTERM)
        assert bot.wait(timeout=scaled(60)) == 0, log.read_text()[-3000:]


@contextlib.contextmanager
def running_bot(fake: FakeTelegram, config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``run_bot.py`` (:func:`start_bot`) for the ``with`` block, once it has set its
    commands; stopped at the block's end, and a clean exit expected (:func:`stop`)."""
    bot = start_bot(fake, config, log)
    try:
        fake.wait_for(lambda: fake.calls_to("setMyCommands"), timeout=60)
        yield bot
    finally:
        stop(bot, log)
