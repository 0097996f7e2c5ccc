"""The last router: buttons nobody handles, and errors, each answered politely.

Included last, so its catch-all callback handler sees only buttons that matched no
other handler: stale ones from an older bot, or forged callback data.
"""

from __future__ import annotations

import html
import logging

from aiogram import Router
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.filters import ExceptionTypeFilter
from aiogram.types import CallbackQuery, ErrorEvent, Update

from bot.service import BotError
from tuner_core import StudyNotFound

log = logging.getLogger(__name__)

STALE_BUTTON = "This button is no longer valid."
GONE = "That study does not exist (any more)."
FAILED = "Something went wrong; the bot's log has the details."


async def unknown_button(callback: CallbackQuery) -> None:
    log.info("unknown callback data %r from user %d", callback.data, callback.from_user.id)
    await callback.answer(STALE_BUTTON)


async def expected_error(event: ErrorEvent) -> None:
    await _tell(event.update, str(event.exception))


async def study_gone(event: ErrorEvent) -> None:
    await _tell(event.update, GONE)


async def unexpected_error(event: ErrorEvent) -> None:
    log.error("update %d failed", event.update.update_id, exc_info=event.exception)
    await _tell(event.update, FAILED)


async def _tell(update: Update, text: str) -> None:
    """Say ``text`` (plain) where the update came from; a button's spinner is stopped.

    A button already answered (its handler said "Exporting…") cannot be answered again,
    so then the text goes to the chat as a message.
    """
    query = update.callback_query
    try:
        if query is not None:
            try:
                await query.answer(text[:200], show_alert=True)  # Telegram's limit
                return
            except TelegramBadRequest:
                if query.message is None:
                    raise
                await query.message.answer(html.escape(text, quote=False))
        elif update.message is not None:
            await update.message.answer(html.escape(text, quote=False))
    except TelegramAPIError as error:
        log.warning("could not tell the user about the error: %s", error)


def router() -> Router:
    router = Router(name="fallback")
    router.callback_query.register(unknown_button)
    router.errors.register(expected_error, ExceptionTypeFilter(BotError))
    router.errors.register(study_gone, ExceptionTypeFilter(StudyNotFound))
    router.errors.register(unexpected_error)
    return router
