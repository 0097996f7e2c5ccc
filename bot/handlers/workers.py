"""/workers: the fleet, each worker's host, devices, current trials and last heartbeat."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot import fleet_texts, messages
from bot.service import TunerService


async def workers(message: Message, service: TunerService) -> None:
    for piece in messages.split_message(fleet_texts.workers_text(await service.workers())):
        await message.answer(piece)


def router() -> Router:
    router = Router(name="workers")
    router.message.register(workers, Command("workers"))
    return router
