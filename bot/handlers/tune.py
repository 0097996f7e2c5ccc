"""/tune N: start a study of N trials in a new worker process."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot import messages
from bot.keyboards import study_keyboard
from bot.service import StartedStudy, TunerService
from bot.state import BotState
from tuner_core.reporting.events import study_started_id


async def tune(message: Message, command: CommandObject, service: TunerService,
               bot_state: BotState) -> None:
    n_trials = service.parse_trials(command.args)
    # This reply is the "study started" news: the notifier must not tell it here too, so
    # it waits until the reply is sent and recorded.
    async with bot_state.telling:
        result = await service.start_study(n_trials)
        if isinstance(result, StartedStudy):
            await message.answer(messages.study_started(result))
            bot_state.sent(study_started_id(result.name), message.chat.id)
            return
    await message.answer(messages.already_running(result),
                         reply_markup=study_keyboard(result["study_id"], running=True))


def router() -> Router:
    router = Router(name="tune")
    router.message.register(tune, Command("tune"))
    return router
