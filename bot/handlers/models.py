"""/models and the model buttons: registry versions, promotion to champion, export."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, FSInputFile, Message
from aiogram.utils.chat_action import ChatActionSender

from bot import messages
from bot.handlers.replies import origin
from bot.keyboards import ModelAction, ModelButton, models_keyboard
from bot.middlewares import ButtonAnswer
from bot.service import TunerService

WITH_BUTTONS = 5  # the newest versions get Promote and Export buttons


async def models(message: Message, service: TunerService) -> None:
    # The first reading loads MLflow: seconds.
    async with ChatActionSender.typing(chat_id=message.chat.id, bot=message.bot):
        found = await service.models()
    keyboard = models_keyboard([int(model["version"]) for model in found[:WITH_BUTTONS]])
    pieces = messages.split_message(messages.models_text(found))
    for piece in pieces[:-1]:
        await message.answer(piece)
    await message.answer(pieces[-1], reply_markup=keyboard)


async def promote(callback: CallbackQuery, callback_data: ModelButton,
                  service: TunerService, answer: ButtonAnswer) -> None:
    result = await service.promote(callback_data.version)
    await origin(callback).answer(messages.promoted(result))
    await answer(messages.promote_answer(result))


async def export(callback: CallbackQuery, callback_data: ModelButton,
                 service: TunerService, answer: ButtonAnswer) -> None:
    chat = origin(callback)
    await service.require_version(callback_data.version)
    await answer("Exporting…")  # before the work: Telegram wants an answer soon
    async with ChatActionSender.upload_document(chat_id=chat.chat.id, bot=callback.bot):
        exported = await service.export(callback_data.version)
        if exported.zip_path is None:
            await chat.answer(messages.exported(exported))
        else:
            await chat.answer_document(FSInputFile(exported.zip_path),
                                       caption=messages.exported(exported))


def router() -> Router:
    router = Router(name="models")
    router.message.register(models, Command("models"))
    router.callback_query.register(promote, ModelButton.filter(F.action == ModelAction.PROMOTE))
    router.callback_query.register(export, ModelButton.filter(F.action == ModelAction.EXPORT))
    return router
