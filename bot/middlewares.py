"""Middlewares: who may use the bot, which chats hear its news, button answers, the
requests in hand at shutdown, and retries of Bot API calls.

:class:`AllowList`, :class:`RememberChats`, :class:`UpdatesInHand` and
:class:`AnswerButtons` wrap every update (outer middlewares of the dispatcher's
``update`` observer); :class:`RetryRequests` and :class:`EndOnConflict` wrap every
request the bot makes (session middlewares), so each call survives flood limits and
outages, and a second bot polling the same token ends this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from aiogram import BaseMiddleware
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.enums import ChatType
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramConflictError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import GetUpdates, TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import CallbackQuery, Chat, TelegramObject, Update, User
from aiogram.utils.backoff import Backoff, BackoffConfig

from bot.messages import PRIVATE, cancelled
from bot.state import BotState

if TYPE_CHECKING:
    from aiogram import Bot

log = logging.getLogger(__name__)

# Seconds between retries after a server or network failure: 1, 2, 4, ... up to 60.
RETRY_BACKOFF = BackoffConfig(min_delay=1.0, max_delay=60.0, factor=2.0, jitter=0.1)
# A request is retried while its waits add up to this: long enough for Telegram's flood
# control (its retry_after is seconds, rarely a minute), short enough for a person waiting.
MAX_RETRY_WAIT_S = 60.0

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class AllowList(BaseMiddleware):
    """Only allow-listed users get past; a stranger is told once per run, then ignored.

    It sits on the update observer, so it guards messages and buttons alike, and runs
    after aiogram's own user-context middleware, which finds the update's sender. A
    stranger's button press is still answered, without a word after the first time, so
    their client stops waiting.
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
        if user is not None and isinstance(event, Update):
            first = user.id not in self.refused
            if first:
                self.refused.add(user.id)
                log.warning("refused user %d (not in telegram.allowed_users)", user.id)
            await _refuse(data["bot"], event, PRIVATE if first else None)
        return None


async def _refuse(bot: Bot, update: Update, text: str | None) -> None:
    try:
        if update.callback_query is not None:
            await bot.answer_callback_query(update.callback_query.id, text=text)
        elif update.message is not None and text is not None:
            await bot.send_message(update.message.chat.id, text)
    except TelegramAPIError as error:  # the refusal is a courtesy; never fail over it
        log.info("could not send the refusal: %s", error)


class RememberChats(BaseMiddleware):
    """Remember the private chats allowed users write from: the notification targets
    when ``telegram.chat_id`` is not set.

    Groups are left out: there everyone, allowed or not, would read the studies' news;
    a group hears it only when it is configured as ``telegram.chat_id``.
    """

    def __init__(self, state: BotState):
        self.state = state

    async def __call__(self, handler: Handler, event: TelegramObject,
                       data: dict[str, Any]) -> Any:
        chat: Chat | None = data.get("event_chat")
        if (chat is not None and chat.type == ChatType.PRIVATE
                and chat.id not in self.state.chats):
            self.state.chats.add(chat.id)
            self.state.save()
        return await handler(event, data)


class ButtonAnswer:
    """The one answer a button press gets: Telegram's client waits for it with a spinner,
    and Telegram refuses a second one ("query is too old")."""

    def __init__(self, callback: CallbackQuery):
        self.callback = callback
        self.sent = False

    async def __call__(self, text: str | None = None, show_alert: bool = False) -> None:
        """Answer now, with ``text`` as a notice or an alert; later calls do nothing."""
        if self.sent:
            return
        self.sent = True
        await self.callback.answer(text, show_alert=show_alert)


class AnswerButtons(BaseMiddleware):
    """Give every button press a :class:`ButtonAnswer`, as ``answer`` in the handler's
    data, and answer it without text when its handler returns without having answered.

    A handler that fails leaves the answer to the error handlers (they get ``answer``
    too, being outside this middleware), which answer it or, if it was answered before
    the failure (an export says "Exporting…" first), write to the chat instead.
    """

    async def __call__(self, handler: Handler, event: TelegramObject,
                       data: dict[str, Any]) -> Any:
        if not isinstance(event, Update) or event.callback_query is None:
            return await handler(event, data)
        answer = data["answer"] = ButtonAnswer(event.callback_query)
        result = await handler(event, data)
        try:
            await answer()
        except TelegramBadRequest as error:  # pressed too long ago; the work is done anyway
            log.info("could not answer a button press: %s", error)
        return result


class UpdatesInHand(BaseMiddleware):
    """The updates being handled, so that a stopping bot can let them finish or cancel
    them, and tell their chats what became of them (see :meth:`finish`)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False

    async def __call__(self, handler: Handler, event: TelegramObject,
                       data: dict[str, Any]) -> Any:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            return await handler(event, data)
        except asyncio.CancelledError:
            chat: Chat | None = data.get("event_chat")
            if self.stopping and chat is not None and isinstance(event, Update):
                await _say_cancelled(data["bot"], chat.id, event)
            raise
        finally:
            self.tasks.discard(task)

    async def finish(self, grace_s: float, notice_s: float) -> None:
        """Give the updates in hand ``grace_s`` seconds to finish, then cancel the rest;
        each cancelled one tells its chat so, within ``notice_s`` seconds."""
        self.stopping = True
        if not self.tasks:
            return
        _, unfinished = await asyncio.wait(set(self.tasks), timeout=grace_s)
        for task in unfinished:
            task.cancel()
        if unfinished:
            log.warning("stopping: %d request(s) still in hand were cancelled", len(unfinished))
            await asyncio.wait(unfinished, timeout=notice_s)


async def _say_cancelled(bot: Bot, chat_id: int, update: Update) -> None:
    query = update.callback_query
    text = cancelled(command=update.message.text if update.message else None,
                     button=_button_label(query) if query else None)
    try:
        with single_try():  # the bot is stopping: no time to wait out a flood limit
            await bot.send_message(chat_id, text)
    except TelegramAPIError as error:
        log.warning("could not tell chat %d that its request was cancelled: %s",
                    chat_id, error)


def _button_label(query: CallbackQuery) -> str | None:
    """The label of the pressed button, found by its data under the message it was
    pressed on; None when that message is too old for its buttons to be known."""
    markup = getattr(query.message, "reply_markup", None)
    rows = markup.inline_keyboard if markup is not None else []
    return next((button.text for row in rows for button in row
                 if button.callback_data == query.data), None)


class EndOnConflict(BaseRequestMiddleware):
    """End this bot when Telegram says that another process polls the same token.

    Telegram serves updates to one ``getUpdates`` consumer at a time and answers the
    other with 409 Conflict; two bots on one token would each get the other's updates
    by turns and both answer. This one stops (``stop``, the dispatcher's
    ``stop_polling``) and remembers why in :attr:`conflict`.
    """

    def __init__(self, stop: Callable[[], Awaitable[None]]):
        self.stop = stop
        self.conflict: TelegramConflictError | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def __call__(self, make_request: NextRequestMiddlewareType[TelegramType],
                       bot: Bot, method: TelegramMethod[TelegramType]
                       ) -> Response[TelegramType]:
        try:
            return await make_request(bot, method)
        except TelegramConflictError as error:
            if self.conflict is None:
                self.conflict = error
                log.error("another bot is polling Telegram with this token (%s); this one "
                          "stops", error.message)
                # A task of its own: stopping the polling cancels the request we are in.
                self._stopping = asyncio.create_task(self.stop())
            raise


class RetryRequests(BaseRequestMiddleware):
    """Retry a Bot API call after flood control (429) or a server or network failure.

    A 429 waits the ``retry_after`` Telegram gave; a 5xx or a network error waits an
    exponential backoff. Retries go on while the waits add up to at most ``max_wait_s``;
    then the error is raised. ``getUpdates`` is left alone: polling has its own endless
    backoff. A call made under :func:`single_try` is tried once: an error notice must not
    spend the wait that the reply it stands for has just used up.
    """

    def __init__(self, max_wait_s: float = MAX_RETRY_WAIT_S,
                 backoff: BackoffConfig = RETRY_BACKOFF,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.max_wait_s = max_wait_s
        self.backoff = backoff
        self.sleep = sleep

    async def __call__(self, make_request: NextRequestMiddlewareType[TelegramType],
                       bot: Bot, method: TelegramMethod[TelegramType]
                       ) -> Response[TelegramType]:
        if isinstance(method, GetUpdates) or _single_try.get():
            return await make_request(bot, method)
        backoff = Backoff(self.backoff)
        waited = 0.0
        while True:
            try:
                return await make_request(bot, method)
            except (TelegramRetryAfter, TelegramServerError, TelegramNetworkError) as error:
                delay = (float(error.retry_after) if isinstance(error, TelegramRetryAfter)
                         else max(0.0, next(backoff)))
                if waited + delay > self.max_wait_s:
                    raise
                log.warning("%s failed (%s); retrying in %.1f s",
                            type(method).__name__, error, delay)
            waited += delay
            await self.sleep(delay)


_single_try: ContextVar[bool] = ContextVar("single_try", default=False)


@contextlib.contextmanager
def single_try() -> Iterator[None]:
    """Bot API calls made in this block are not retried (see :class:`RetryRequests`)."""
    token = _single_try.set(True)
    try:
        yield
    finally:
        _single_try.reset(token)
