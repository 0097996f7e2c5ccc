"""/status: the running or last study, with Refresh (edits in place) and Stop buttons."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from bot import messages
from bot.handlers.replies import replace_message
from bot.keyboards import StudyAction, StudyButton, study_keyboard
from bot.middlewares import ButtonAnswer
from bot.service import TunerService


async def status(message: Message, service: TunerService) -> None:
    study = await service.latest_status()
    if study is None:
        await message.answer(messages.no_study())
        return
    await message.answer(messages.status_text(study), reply_markup=study_keyboard(
        study["study_id"], running=study["state"] == "running"))


async def refresh(callback: CallbackQuery, callback_data: StudyButton,
                  service: TunerService, answer: ButtonAnswer) -> None:
    study = await service.status(callback_data.study)
    await replace_message(callback, messages.status_text(study), study_keyboard(
        study["study_id"], running=study["state"] == "running"))
    await answer("Updated")


def router() -> Router:
    router = Router(name="status")
    router.message.register(status, Command("status"))
    router.callback_query.register(refresh, StudyButton.filter(F.action == StudyAction.REFRESH))
    return router
