"""/best: the best trial, with Promote, Audio sample and Export buttons."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, FSInputFile, Message

from bot import messages
from bot.handlers.replies import origin
from bot.keyboards import AudioButton, best_keyboard
from bot.service import TunerService


async def best(message: Message, service: TunerService) -> None:
    found = await service.best()
    if found is None:
        await message.answer(messages.no_best())
        return
    model = await service.model(found["version"])
    await message.answer(messages.best_text(found, model), reply_markup=best_keyboard(
        found["study_id"], found["number"], int(model["version"]) if model else None))


async def audio(callback: CallbackQuery, callback_data: AudioButton,
                service: TunerService) -> None:
    path = await service.audio_sample(callback_data.study, callback_data.trial)
    if path is None:
        await callback.answer(messages.no_audio(callback_data.trial), show_alert=True)
        return
    await callback.answer()
    await origin(callback).answer_audio(FSInputFile(path),
                                        caption=messages.audio_caption(callback_data.trial))


def router() -> Router:
    router = Router(name="best")
    router.message.register(best, Command("best"))
    router.callback_query.register(audio, AudioButton.filter())
    return router
