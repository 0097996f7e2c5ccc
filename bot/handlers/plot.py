"""/plot: the learning curves of the latest study and its best value against the compute
spent, as two photos."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import BufferedInputFile, Message
from aiogram.utils.chat_action import ChatActionSender

from bot import messages
from bot.service import TunerService


async def plot(message: Message, service: TunerService) -> None:
    async with ChatActionSender.upload_photo(chat_id=message.chat.id, bot=message.bot):
        found = await service.learning_curves()
    if found is None:
        await message.answer(messages.no_study())
        return
    name = found.study
    await message.answer_photo(BufferedInputFile(found.png, filename=f"{name}.png"),
                               caption=messages.plot_caption(name, found.best_trial))
    async with ChatActionSender.upload_photo(chat_id=message.chat.id, bot=message.bot):
        anytime = await service.anytime_of(name)
    await message.answer_photo(BufferedInputFile(anytime, filename=f"{name}-anytime.png"),
                               caption=messages.anytime_caption(name))


def router() -> Router:
    router = Router(name="plot")
    router.message.register(plot, Command("plot"))
    return router
