"""Retries of Bot API requests: flood control (429), server errors (5xx), outages."""

import pytest
from aiogram.exceptions import TelegramBadRequest, TelegramServerError
from aiogram.methods import GetUpdates

from tests.bot_support import ALICE, NETWORK_DOWN, recording_bot


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


async def test_retries_are_bounded() -> None:
    bot, session, sleep = recording_bot()
    session.fail_next(503, "Service Unavailable", times=10)
    with pytest.raises(TelegramServerError):
        await bot.send_message(ALICE, "hello")
    assert len(session.calls("sendMessage")) == 5
    assert len(sleep.delays) == 4


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
