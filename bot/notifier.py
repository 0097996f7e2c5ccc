"""Sends the studies' news (:mod:`tuner_core.reporting.events`) to the chat: in order, each once.

Every poll reads the storage for notifications not yet delivered and sends them, oldest
first, to ``telegram.chat_id`` or, when that is not set, to the private chats of the
allowed users who have written to the bot. A kind switched off in
``telegram.notifications`` is marked delivered unsent.

The guarantee: **a notification is never lost; a bot stopped while a message is on its
way repeats that message once, and says so.** Each message (a notification may take
several: long text in pieces, then its plot) is recorded in ``bot_state.json`` before its
request goes out and again when Telegram answers, and the file is written in the event
loop, not queued behind other work in a thread. A restarted bot goes on after the last
confirmed message. The window in which the bot cannot know whether a message arrived is
the whole request round trip, from the request going out to Telegram's answer being saved
(milliseconds on a good network, up to the request's timeout on a bad one). A bot killed
in it finds the message recorded as in doubt at its next start; Telegram cannot be asked
whether it arrived, and a repeat is better than a loss, so it sends the message again
after :data:`bot.messages.IN_DOUBT`, which tells the chat that it may be a repeat. A
request that got no answer at all (a network error) is the same case. One repeat goes
unmarked: :class:`bot.middlewares.RetryRequests` retries a request that got no answer
within the same send, and if the first had arrived, the chat reads it twice.

* Telegram unreachable (network, 5xx, flood control after the retries of
  :class:`bot.middlewares.RetryRequests`): the poll ends and the next one tries the
  same notification again. The tuner never waits for the chat; it runs in other processes.
* Telegram refuses the message (400, 403: bad request, bot blocked, chat gone): retrying
  would not help, so it is logged and skipped for that chat.
* The very first start on a storage with history: everything of the studies that have
  already finished is marked delivered unsent, so the chat hears about the studies that
  are still running and not about months of history.
* No chat to send to (no ``chat_id`` and nobody has written yet): the news is dropped,
  there is nobody to tell.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import SendMessage, SendPhoto, TelegramMethod
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup

from bot import messages
from bot.keyboards import promote_keyboard
from bot.middlewares import single_try
from bot.service import TunerService
from bot.state import BotState
from tuner_core.config import TelegramConfig
from tuner_core.reporting.events import Kind, Notification

log = logging.getLogger(__name__)

T = TypeVar("T")

# Errors that may pass by themselves: the notification is tried again at the next poll.
TRANSIENT = (TelegramNetworkError, TelegramServerError, TelegramRetryAfter)


@dataclass(frozen=True)
class Outgoing:
    """One notification as Telegram messages: text pieces, then an optional photo."""

    texts: list[str]
    keyboard: InlineKeyboardMarkup | None = None  # under the last text piece
    photo: bytes | None = None
    caption: str | None = None


class Notifier:
    """Polls the storage for news and sends it; see the module's docstring."""

    def __init__(self, bot: Bot, service: TunerService, state: BotState,
                 telegram: TelegramConfig):
        self.bot = bot
        self.service = service
        self.state = state
        self.telegram = telegram
        self._closing = False

    def targets(self) -> list[int]:
        """The chats that hear the news."""
        if self.telegram.chat_id is not None:
            return [self.telegram.chat_id]
        return sorted(self.state.chats)

    def enabled(self, kind: Kind) -> bool:
        return bool(getattr(self.telegram.notifications, kind.value))

    async def poll(self) -> None:
        """Send every notification not delivered yet, oldest first; stop at an outage.
        Also refreshes the status that /status answers from."""
        if self.state.first_start:
            backlog = await self.service.finished_studies_backlog()
            self.state.delivered |= backlog
            self.state.save()
            log.info("first start: %d notifications of finished studies marked delivered",
                     len(backlog))
        news = await self.service.news(self.state.delivered)
        # After the news, so that /status is never behind what the chat has been told.
        await _optional(self.service.refresh_status(), "status of the latest study")
        for notification in news:
            if self._closing:
                return
            async with self.state.telling:
                if not await self._deliver(notification):
                    return

    async def close(self, timeout: float) -> None:
        """Send no more; wait up to ``timeout`` seconds for the message being sent."""
        self._closing = True
        try:
            await asyncio.wait_for(self.state.telling.acquire(), timeout)
        except TimeoutError:
            log.warning("stopping while a notification is still being sent")

    async def announce(self, text: str) -> None:
        """Tell every target ``text`` now, trying once: the bot is stopping."""
        for chat_id in self.targets():
            try:
                with single_try():
                    await self.bot.send_message(chat_id, text)
            except TelegramAPIError as error:
                log.warning("could not tell chat %d that the bot stops: %s", chat_id, error)

    async def _deliver(self, notification: Notification) -> bool:
        """Send to every target that has not had it; whether it is now delivered."""
        targets = self.targets()
        if self.enabled(notification.kind) and targets:
            outgoing = await self._render(notification)
            for chat_id in targets:
                if chat_id in self.state.sent_to.get(notification.id, ()):
                    continue
                try:
                    await self._send(chat_id, outgoing, notification.id)
                except TRANSIENT as error:
                    log.warning("Telegram unavailable (%s); %s will be sent at the next poll",
                                error, notification.id)
                    return False
                except TelegramAPIError as error:
                    log.error("Telegram refused %s for chat %d: %s; skipped",
                              notification.id, chat_id, error)
                self.state.sent(notification.id, chat_id)
        elif self.enabled(notification.kind):
            log.info("no chat to send %s to (telegram.chat_id is not set and nobody has "
                     "written to the bot yet)", notification.id)
        self.state.delivered.add(notification.id)
        self.state.sent_to.pop(notification.id, None)
        self.state.save()
        return True

    async def _render(self, notification: Notification) -> Outgoing:
        texts = messages.split_message(messages.notification_text(notification))
        if notification.kind is not Kind.TRAINING_COMPLETE:
            return Outgoing(texts)
        # The study's end also brings its learning curves and a way to promote the winner.
        study = notification.study
        version = await _optional(self.service.best_version(study), f"best version of {study}")
        curves = await _optional(self.service.learning_curves_of(study),
                                 f"learning curves of {study}")
        return Outgoing(texts, keyboard=promote_keyboard(version) if version else None,
                        photo=curves, caption=messages.plot_caption(
                            study, notification.facts["best_trial"]))

    async def _send(self, chat_id: int, outgoing: Outgoing,
                    notification_id: str | None = None) -> None:
        """Send ``outgoing``'s messages in turn. For a notification, each is recorded
        before its request goes out and again when Telegram answers; the messages
        confirmed before (by a bot that stopped half-way) are not sent again, and one
        whose request was out when the bot stopped is sent after :data:`messages.IN_DOUBT`.
        """
        confirmed, in_doubt = (self.state.progress(notification_id, chat_id)
                               if notification_id else (0, False))
        if in_doubt:
            await self.bot(SendMessage(chat_id=chat_id, text=messages.IN_DOUBT))
        for number, request in enumerate(self._requests(chat_id, outgoing), start=1):
            if number <= confirmed:
                continue
            if notification_id is None:
                await self.bot(request)
                continue
            self.state.attempting(notification_id, chat_id, number)
            try:
                await self.bot(request)
            except TelegramNetworkError:
                raise  # no answer: it may have arrived, so the doubt stays on record
            except TelegramAPIError:
                self.state.answered(notification_id, chat_id, number, arrived=False)
                raise
            self.state.answered(notification_id, chat_id, number, arrived=True)

    @staticmethod
    def _requests(chat_id: int, outgoing: Outgoing) -> list[TelegramMethod[Any]]:
        requests: list[TelegramMethod[Any]] = [
            SendMessage(chat_id=chat_id, text=text,
                        reply_markup=outgoing.keyboard if index == len(outgoing.texts) - 1
                        else None)
            for index, text in enumerate(outgoing.texts)]
        if outgoing.photo is not None:
            requests.append(SendPhoto(chat_id=chat_id,
                                      photo=BufferedInputFile(outgoing.photo, "curves.png"),
                                      caption=outgoing.caption))
        return requests

    async def summary(self) -> None:
        """The periodic metrics summary of the running study: its status and curves."""
        status = await self.service.running_study()
        if status is None:
            return
        name = status["study_name"]
        outgoing = Outgoing(messages.split_message(messages.status_text(status)),
                            photo=await _optional(self.service.learning_curves_of(name),
                                                  f"learning curves of {name}"),
                            caption=messages.plot_caption(name, status["best_trial"]))
        for chat_id in self.targets():
            try:
                await self._send(chat_id, outgoing)
            except TelegramAPIError as error:  # the next summary will be fresher anyway
                log.warning("could not send the metrics summary to chat %d: %s", chat_id, error)


async def _optional(extra: Awaitable[T], what: str) -> T | None:
    """The result of ``extra``, or None if it fails: an extra (a plot, a button) must not
    hold the news back."""
    try:
        return await extra
    except Exception:
        log.exception("could not get the %s", what)
        return None
