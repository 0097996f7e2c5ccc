"""The last router: commands and buttons nobody handles, and errors, each answered politely.

Included last, so its catch-all handlers see only what matched no other handler: an
unknown or mistyped command (``/TUNE``: commands are lower-case), a stale button from an
older bot, or forged callback data.
"""

from __future__ import annotations

import html
import logging

from aiogram import F, Router
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramRetryAfter
from aiogram.filters import ExceptionTypeFilter
from aiogram.types import CallbackQuery, ErrorEvent, Message, Update

from bot import messages
from bot.middlewares import ButtonAnswer, single_try
from bot.service import BotError
from tuner_core import StudyNotFound

log = logging.getLogger(__name__)

STALE_BUTTON = "This button is no longer valid."
GONE = "That study does not exist (any more)."
FAILED = "Something went wrong; the bot's log has the details."
RATE_LIMITED = "Telegram is rate-limiting this bot; please try again in a minute."
ALERT_LIMIT = 200  # Telegram's limit for the text of a callback answer


async def unknown_command(message: Message) -> None:
    command, _, mention = message.text.split(maxsplit=1)[0].partition("@")
    if mention and mention.lower() != (await message.bot.me()).username.lower():
        return  # addressed to another bot in a group
    await message.answer(messages.unknown_command(command))


async def unknown_button(callback: CallbackQuery, answer: ButtonAnswer) -> None:
    log.info("unknown callback data %r from user %d", callback.data, callback.from_user.id)
    await answer(STALE_BUTTON)


async def expected_error(event: ErrorEvent, answer: ButtonAnswer | None = None) -> None:
    await _tell(event.update, str(event.exception), answer)


async def study_gone(event: ErrorEvent, answer: ButtonAnswer | None = None) -> None:
    await _tell(event.update, GONE, answer)


async def rate_limited(event: ErrorEvent, answer: ButtonAnswer | None = None) -> None:
    log.warning("update %d: Telegram's flood control outlasted the retries: %s",
                event.update.update_id, event.exception)
    await _tell(event.update, RATE_LIMITED, answer)


async def unexpected_error(event: ErrorEvent, answer: ButtonAnswer | None = None) -> None:
    log.error("update %d failed", event.update.update_id, exc_info=event.exception)
    await _tell(event.update, FAILED, answer)


async def _tell(update: Update, text: str, answer: ButtonAnswer | None) -> None:
    """Say ``text`` (plain) where the update came from, trying once: the reply it stands
    for may just have spent a minute on retries.

    A button press not answered yet is answered with ``text`` as an alert; one answered
    already (its handler said "Exporting…") gets ``text`` in the chat instead.
    """
    query = update.callback_query
    try:
        with single_try():
            if query is not None and answer is not None and not answer.sent:
                try:
                    await answer(text[:ALERT_LIMIT], show_alert=True)
                    return
                except TelegramBadRequest:  # pressed too long ago to answer: say it below
                    pass
            chat = query.message if query is not None else update.message
            if chat is not None:
                await chat.answer(html.escape(text, quote=False))
    except TelegramAPIError as error:
        log.warning("could not tell the user about the error: %s", error)


def router() -> Router:
    router = Router(name="fallback")
    router.message.register(unknown_command, F.text.startswith("/"))
    router.callback_query.register(unknown_button)
    router.errors.register(expected_error, ExceptionTypeFilter(BotError))
    router.errors.register(study_gone, ExceptionTypeFilter(StudyNotFound))
    router.errors.register(rate_limited, ExceptionTypeFilter(TelegramRetryAfter))
    router.errors.register(unexpected_error)
    return router
