"""/best: the best trial, with Promote, Audio sample (a voice message) and Export buttons."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import BufferedInputFile, CallbackQuery, Message

from bot import messages
from bot.handlers.replies import origin
from bot.keyboards import AudioButton, best_keyboard
from bot.middlewares import ButtonAnswer
from bot.service import TunerService


async def best(message: Message, service: TunerService) -> None:
    found = await service.best()
    if found is None:
        await message.answer(messages.no_best(await service.latest_study_name()))
        return
    model = await service.model(found["version"])
    await message.answer(messages.best_text(found, model), reply_markup=best_keyboard(
        found["study_id"], found["number"], int(model["version"]) if model else None))


async def audio(callback: CallbackQuery, callback_data: AudioButton,
                service: TunerService, answer: ButtonAnswer) -> None:
    voice = await service.voice_sample(callback_data.study, callback_data.trial)
    if voice is None:
        await answer(messages.no_audio(callback_data.trial), show_alert=True)
        return
    await answer()
    await origin(callback).answer_voice(
        BufferedInputFile(voice.ogg, filename=f"trial-{callback_data.trial}.ogg"),
        duration=voice.duration_s, caption=messages.audio_caption(callback_data.trial))


def router() -> Router:
    router = Router(name="best")
    router.message.register(best, Command("best"))
    router.callback_query.register(audio, AudioButton.filter())
    return router
