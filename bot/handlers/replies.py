"""Helpers for answering a button press: where it came from, and editing that message."""

from __future__ import annotations

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InaccessibleMessage, InlineKeyboardMarkup, Message

from bot.service import BotError


def origin(callback: CallbackQuery) -> Message | InaccessibleMessage:
    """The message whose button was pressed (it may be too old to edit)."""
    if callback.message is None:  # only inline-mode messages lack it; the bot sends none
        raise BotError("This button only works in the chat it was sent to.")
    return callback.message


async def replace_message(callback: CallbackQuery, text: str,
                          reply_markup: InlineKeyboardMarkup | None = None) -> None:
    """Edit the pressed button's message in place.

    Telegram refuses an edit that changes nothing ("message is not modified"), as when
    Refresh is pressed twice within a second; that is not an error here.
    """
    message = origin(callback)
    try:
        await callback.bot.edit_message_text(text=text, chat_id=message.chat.id,
                                             message_id=message.message_id,
                                             reply_markup=reply_markup)
    except TelegramBadRequest as error:
        if "message is not modified" not in error.message:
            raise
