"""/start and /help: what the bot does and its commands."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandStart
from aiogram.types import Message

from bot import messages
from bot.service import TunerService


async def start(message: Message, service: TunerService) -> None:
    await message.answer(messages.help_text(service.config.experiment_name))


def router() -> Router:
    router = Router(name="start")
    router.message.register(start, CommandStart())
    router.message.register(start, Command("help"))
    return router
