"""Retries of Bot API requests: flood control (429), server errors (5xx), outages."""

import pytest
from aiogram.exceptions import TelegramBadRequest, TelegramRetryAfter, TelegramServerError
from aiogram.methods import GetUpdates

from bot.handlers.fallback import RATE_LIMITED
from bot.middlewares import MAX_RETRY_WAIT_S, single_try
from tests.bot_support import ALICE, NETWORK_DOWN, BotHarness, recording_bot, write_config
from tuner_core import SmartTuner


async def test_flood_control_waits_the_time_telegram_asks_for() -> None:
    bot, session, sleep = recording_bot()
    session.fail_next(429, "Too Many Requests: retry after 7", retry_after=7, times=2)
    message = await bot.send_message(ALICE, "hello")
    assert message.text == "hello"
    assert len(session.calls("sendMessage")) == 3
    assert sleep.delays == [7.0, 7.0]


async def test_server_errors_and_outages_back_off_exponentially() -> None:
    bot, session, sleep = recording_bot()
    session.fail_next(502, "Bad Gateway")
    session.fail_next(NETWORK_DOWN, "ClientConnectorError: cannot connect")
    session.fail_next(500, "Internal Server Error")
    await bot.send_message(ALICE, "hello")
    assert len(session.calls("sendMessage")) == 4
    assert len(sleep.delays) == 3
    # 1 s, 2 s, 4 s, give or take the jitter
    assert [round(delay) for delay in sleep.delays] == [1, 2, 4]


async def test_retries_are_bounded_by_the_time_they_wait() -> None:
    bot, session, sleep = recording_bot()
    session.fail_next(503, "Service Unavailable", times=10)
    with pytest.raises(TelegramServerError):
        await bot.send_message(ALICE, "hello")
    # About 1 + 2 + 4 + 8 + 16 s waited (give or take the jitter), then it gives up: the
    # next 32 s would pass the minute.
    assert len(session.calls("sendMessage")) == len(sleep.delays) + 1 < 10
    assert sum(sleep.delays) <= MAX_RETRY_WAIT_S


async def test_a_storm_of_429s_is_waited_out_within_a_minute() -> None:
    bot, session, sleep = recording_bot()
    session.fail_next(429, "Too Many Requests: retry after 2", retry_after=2, times=20)
    message = await bot.send_message(ALICE, "hello")
    assert message.text == "hello"
    assert len(session.calls("sendMessage")) == 21
    assert sum(sleep.delays) == 40


async def test_flood_control_longer_than_a_minute_is_raised() -> None:
    bot, session, sleep = recording_bot()
    session.fail_next(429, "Too Many Requests: retry after 25", retry_after=25, times=3)
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(ALICE, "hello")
    assert sleep.delays == [25, 25]
    assert sum(sleep.delays) <= MAX_RETRY_WAIT_S


async def test_a_single_try_is_not_retried() -> None:
    bot, session, sleep = recording_bot()
    session.fail_next(429, "Too Many Requests: retry after 2", retry_after=2)
    with single_try(), pytest.raises(TelegramRetryAfter):
        await bot.send_message(ALICE, "hello")
    assert sleep.delays == []


async def test_a_reply_lost_to_flood_control_is_said_once_as_rate_limiting(
        tmp_path) -> None:
    harness = BotHarness(SmartTuner(write_config(tmp_path), environ={}))
    harness.session.fail_next(429, "Too Many Requests: retry after 30", retry_after=30,
                              times=10, api_method="sendMessage")
    requests = await harness.send(ALICE, "/help")
    sends = [r for r in requests if r.__api_method__ == "sendMessage"]
    # The reply: tried while the waits stay within the minute (30 + 30 s); then the
    # notice, once, without waiting again.
    assert [r.text == RATE_LIMITED for r in sends] == [False, False, False, True]
    assert harness.sleep.delays == [30, 30]


async def test_a_bad_request_is_not_retried() -> None:
    bot, session, sleep = recording_bot()
    session.fail_next(400, "Bad Request: can't parse entities")
    with pytest.raises(TelegramBadRequest):
        await bot.send_message(ALICE, "<b>hello")
    assert len(session.calls("sendMessage")) == 1
    assert sleep.delays == []


async def test_polling_is_left_to_aiograms_own_backoff() -> None:
    bot, session, sleep = recording_bot()
    session.fail_next(502, "Bad Gateway")
    with pytest.raises(TelegramServerError):
        await bot(GetUpdates(timeout=0))
    assert sleep.delays == []
