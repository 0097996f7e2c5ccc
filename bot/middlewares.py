"""Middlewares: who may use the bot, which chats hear its news, and retries of Bot API calls.

:class:`AllowList` and :class:`RememberChats` wrap every update (outer middlewares of
the dispatcher's ``update`` observer); :class:`RetryRequests` wraps every request the
bot makes (a session middleware), so each call survives flood limits and outages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

from aiogram import BaseMiddleware
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import GetUpdates, TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import TelegramObject, Update, User
from aiogram.utils.backoff import Backoff, BackoffConfig

from bot.messages import PRIVATE
from bot.state import BotState

if TYPE_CHECKING:
    from aiogram import Bot

log = logging.getLogger(__name__)

# Seconds between retries after a server or network failure: 1, 2, 4, ... up to 60.
RETRY_BACKOFF = BackoffConfig(min_delay=1.0, max_delay=60.0, factor=2.0, jitter=0.1)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class AllowList(BaseMiddleware):
    """Only allow-listed users get past; a stranger is told once per run, then ignored.

    It sits on the update observer, so it guards messages and buttons alike, and runs
    after aiogram's own user-context middleware, which finds the update's sender.
    """

    def __init__(self, allowed_users: Collection[int], allow_everyone: bool = False):
        self.allowed_users = frozenset(allowed_users)
        self.allow_everyone = allow_everyone
        self.refused: set[int] = set()

    async def __call__(self, handler: Handler, event: TelegramObject,
                       data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        if user is not None and (self.allow_everyone or user.id in self.allowed_users):
            return await handler(event, data)
        if user is not None and user.id not in self.refused and isinstance(event, Update):
            self.refused.add(user.id)
            log.warning("refused user %d (not in telegram.allowed_users)", user.id)
            await _refuse(data["bot"], event)
        return None


async def _refuse(bot: Bot, update: Update) -> None:
    try:
        if update.callback_query is not None:
            await bot.answer_callback_query(update.callback_query.id, text=PRIVATE)
        elif update.message is not None:
            await bot.send_message(update.message.chat.id, PRIVATE)
    except TelegramAPIError as error:  # the refusal is a courtesy; never fail over it
        log.info("could not send the refusal: %s", error)


class RememberChats(BaseMiddleware):
    """Remember the chats allowed users write from: the notification targets when
    ``telegram.chat_id`` is not set."""

    def __init__(self, state: BotState):
        self.state = state

    async def __call__(self, handler: Handler, event: TelegramObject,
                       data: dict[str, Any]) -> Any:
        chat = data.get("event_chat")
        if chat is not None and chat.id not in self.state.chats:
            self.state.chats.add(chat.id)
            await self.state.save()
        return await handler(event, data)


class RetryRequests(BaseRequestMiddleware):
    """Retry a Bot API call after flood control (429) or a server or network failure.

    A 429 waits the ``retry_after`` Telegram gave; a 5xx or a network error waits an
    exponential backoff. After ``attempts`` tries the error is raised. ``getUpdates``
    is left alone: polling has its own endless backoff.
    """

    def __init__(self, attempts: int = 5, backoff: BackoffConfig = RETRY_BACKOFF,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.attempts = attempts
        self.backoff = backoff
        self.sleep = sleep

    async def __call__(self, make_request: NextRequestMiddlewareType[TelegramType],
                       bot: Bot, method: TelegramMethod[TelegramType]
                       ) -> Response[TelegramType]:
        if isinstance(method, GetUpdates):
            return await make_request(bot, method)
        backoff = Backoff(self.backoff)
        for _ in range(self.attempts - 1):
            try:
                return await make_request(bot, method)
            except (TelegramRetryAfter, TelegramServerError, TelegramNetworkError) as error:
                delay = (float(error.retry_after) if isinstance(error, TelegramRetryAfter)
                         else max(0.0, next(backoff)))
                log.warning("%s failed (%s); retrying in %.1f s",
                            type(method).__name__, error, delay)
            await self.sleep(delay)
        return await make_request(bot, method)  # the last try: its error is the caller's
