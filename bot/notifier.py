"""Sends the studies' news (:mod:`tuner_core.events`) to the chat: in order, each once.

Every poll reads the storage for notifications not yet delivered and sends them, oldest
first, to ``telegram.chat_id`` or, when that is not set, to the chats of the allowed
users who have written to the bot. A notification counts as delivered, and is saved so
in ``bot_state.json``, right after it was sent; so a restarted bot drops none, and
repeats one only if it was killed in the milliseconds between Telegram's answer and
that save (Telegram cannot be asked whether a message arrived, and a repeat is better
than a loss). A kind switched off in ``telegram.notifications`` is marked delivered unsent.

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
from typing import TypeVar

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup

from bot import messages
from bot.keyboards import promote_keyboard
from bot.service import TunerService
from bot.state import BotState
from tuner_core.config import TelegramConfig
from tuner_core.events import Kind, Notification

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
        """Send every notification not delivered yet, oldest first; stop at an outage."""
        if self.state.first_start:
            backlog = await self.service.finished_studies_backlog()
            self.state.delivered |= backlog
            await self.state.save()
            log.info("first start: %d notifications of finished studies marked delivered",
                     len(backlog))
        for notification in await self.service.news(self.state.delivered):
            if self._closing:
                return
            async with self.state.telling:
                if not await self._deliver(notification):
                    return

    async def close(self, timeout: float = 10.0) -> None:
        """Send no more; wait up to ``timeout`` seconds for the message being sent."""
        self._closing = True
        try:
            await asyncio.wait_for(self.state.telling.acquire(), timeout)
        except TimeoutError:
            log.warning("stopping while a notification is still being sent")

    async def _deliver(self, notification: Notification) -> bool:
        """Send to every target that has not had it; whether it is now delivered."""
        targets = self.targets()
        if self.enabled(notification.kind) and targets:
            outgoing = await self._render(notification)
            sent_to = self.state.sent_to.setdefault(notification.id, set())
            for chat_id in targets:
                if chat_id in sent_to:
                    continue
                try:
                    await self._send(chat_id, outgoing)
                except TRANSIENT as error:
                    log.warning("Telegram unavailable (%s); %s will be sent at the next poll",
                                error, notification.id)
                    return False
                except TelegramAPIError as error:
                    log.error("Telegram refused %s for chat %d: %s; skipped",
                              notification.id, chat_id, error)
                sent_to.add(chat_id)
                await self.state.save()
        elif self.enabled(notification.kind):
            log.info("no chat to send %s to (telegram.chat_id is not set and nobody has "
                     "written to the bot yet)", notification.id)
        self.state.delivered.add(notification.id)
        self.state.sent_to.pop(notification.id, None)
        await self.state.save()
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
                        photo=curves, caption=messages.plot_caption(study))

    async def _send(self, chat_id: int, outgoing: Outgoing) -> None:
        for index, text in enumerate(outgoing.texts):
            last = index == len(outgoing.texts) - 1
            await self.bot.send_message(chat_id, text,
                                        reply_markup=outgoing.keyboard if last else None)
        if outgoing.photo is not None:
            await self.bot.send_photo(chat_id, BufferedInputFile(outgoing.photo, "curves.png"),
                                      caption=outgoing.caption)

    async def summary(self) -> None:
        """The periodic metrics summary of the running study: its status and curves."""
        status = await self.service.running_study()
        if status is None:
            return
        name = status["study_name"]
        outgoing = Outgoing(messages.split_message(messages.status_text(status)),
                            photo=await _optional(self.service.learning_curves_of(name),
                                                  f"learning curves of {name}"),
                            caption=messages.plot_caption(name))
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
