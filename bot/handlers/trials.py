"""/trials: the last trials of the latest study and why each ended."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot import messages
from bot.service import TunerService

SHOWN = 10


async def trials(message: Message, service: TunerService) -> None:
    found = await service.trials(SHOWN)
    if found is None:
        await message.answer(messages.no_study())
        return
    for piece in messages.split_message(messages.trials_text(*found)):
        await message.answer(piece)


def router() -> Router:
    router = Router(name="trials")
    router.message.register(trials, Command("trials"))
    return router
