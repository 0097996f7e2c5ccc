"""/stop and the Stop buttons: ask, then write the stop request into the storage.

The chat learns that the workers have stopped from the "study finished" notification.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from bot import messages
from bot.handlers.replies import origin, replace_message
from bot.keyboards import StopButton, StudyAction, StudyButton, stop_keyboard
from bot.middlewares import ButtonAnswer
from bot.service import TunerService


async def stop(message: Message, service: TunerService) -> None:
    study = await service.stoppable_study()
    await message.answer(messages.stop_question(study),
                         reply_markup=stop_keyboard(study["study_id"]))


async def stop_button(callback: CallbackQuery, callback_data: StudyButton,
                      service: TunerService) -> None:
    study = await service.stoppable_study(callback_data.study)
    await origin(callback).answer(messages.stop_question(study),
                                  reply_markup=stop_keyboard(study["study_id"]))


async def confirm(callback: CallbackQuery, callback_data: StopButton,
                  service: TunerService, answer: ButtonAnswer) -> None:
    if not callback_data.confirm:
        await service.study_name(callback_data.study)  # a study that exists, or BotError
        await replace_message(callback, messages.stop_cancelled())
        return
    name, outcome = await service.request_stop(callback_data.study,
                                               by=f"telegram user {callback.from_user.id}")
    await replace_message(callback, messages.stop_result(name, outcome))
    await answer(outcome.value.capitalize())


def router() -> Router:
    router = Router(name="stop")
    router.message.register(stop, Command("stop"))
    router.callback_query.register(stop_button, StudyButton.filter(F.action == StudyAction.STOP))
    router.callback_query.register(confirm, StopButton.filter())
    return router
