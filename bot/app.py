"""Putting the bot together: settings checks, the Bot, the dispatcher, and the run.

    run_bot.py  →  check_settings(config)  →  hide_token_from_children()
                →  run(tuner, token, api_server)

:func:`run` polls Telegram for updates and runs the scheduled jobs in one event loop
until SIGINT or SIGTERM. Then it gives the requests in hand a moment to finish, cancels
the rest (telling their chats), and exits within about five seconds. Workers started by
/tune are separate processes and keep running; a restarted bot finds their studies in
the storage and its delivered notifications in ``bot_state.json``.

One bot per state folder (a second one refuses to start: :func:`bot.state.hold_state_folder`)
and one per token (a bot that finds another polling its token tells the chat which bot it
is, then stops: :class:`AnotherBot`).
"""

from __future__ import annotations

import logging
import os
import socket

from aiogram import Bot, Dispatcher, F
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand
from aiogram.utils.token import TokenValidationError, validate_token

from bot import handlers, messages
from bot.jobs import create_scheduler
from bot.middlewares import (
    AllowList,
    AnswerButtons,
    EndOnConflict,
    RememberChats,
    RetryRequests,
    UpdatesInHand,
)
from bot.notifier import Notifier
from bot.service import TunerService
from bot.state import BotState, hold_state_folder
from tuner_core import SmartTuner
from tuner_core.config import Config, TelegramConfig

log = logging.getLogger(__name__)

TOKEN_VARIABLE = "TELEGRAM_BOT_TOKEN"
# Stopping: the requests in hand may finish for this long, then are cancelled and their
# chats told within NOTICE_S; a notification being sent gets CLOSE_S. Within 5 s in all.
GRACE_S = 2.0
NOTICE_S = 1.5
CLOSE_S = 1.0

HOW_TO_GET_A_TOKEN = (
    "Talk to @BotFather in Telegram, send /newbot, and put the token it gives you in the "
    "environment: export TELEGRAM_BOT_TOKEN=123456789:AA...")


class SettingsError(RuntimeError):
    """The bot cannot start with these settings; the message says what to do."""


class AnotherBot(RuntimeError):
    """Another bot polls Telegram with this token, so this one stopped."""


def check_settings(config: Config) -> str:
    """The bot token, once the settings the bot needs are known to be usable."""
    secret = config.telegram.bot_token
    token = secret.get_secret_value().strip() if secret else ""
    if not token:
        raise SettingsError(f"No bot token. {HOW_TO_GET_A_TOKEN}")
    try:
        validate_token(token)
    except TokenValidationError:
        # The token itself is never shown: it may be a real one with a typo.
        raise SettingsError("TELEGRAM_BOT_TOKEN is malformed: a token looks like "
                            f"'<digits>:<letters>', without spaces. {HOW_TO_GET_A_TOKEN}"
                            ) from None
    if not config.telegram.allowed_users and not config.telegram.allow_everyone:
        raise SettingsError(
            "Nobody may use the bot: set TELEGRAM_ALLOWED_USERS to your Telegram user ID "
            "(comma-separated for several; @userinfobot tells you yours), or set "
            "telegram.allow_everyone: true in the config to open it to anyone.")
    return token


def hide_token_from_children() -> None:
    """Remove the token from this process's environment once it is in the config: the
    workers the bot starts, and their trainers, inherit the environment and need no
    token, and every process that holds one is one more place it can leak from."""
    os.environ.pop(TOKEN_VARIABLE, None)


class RedactToken(logging.Filter):
    """Replace the bot token in every log record: request URLs contain it, and aiohttp's
    and aiogram's error messages may quote them."""

    def __init__(self, token: str):
        super().__init__()
        self.secrets = {token, token.replace(":", "%3A")}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._contains_secret(message):
            record.msg, record.args = self._redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and self._contains_secret(record.exc_text):
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info and self._contains_secret(record.stack_info):
            record.stack_info = self._redact(record.stack_info)
        return True

    def _contains_secret(self, text: str) -> bool:
        return any(secret in text for secret in self.secrets)

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "<bot token>")
        return text


def redact_token_in_logs(token: str) -> None:
    """Add :class:`RedactToken` to every handler of the root logger (all logs end there)."""
    redact = RedactToken(token)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)


def create_bot(token: str, api_server: str | None = None, session: BaseSession | None = None,
               retry: RetryRequests | None = None) -> Bot:
    """A Bot speaking HTML whose every request is retried (:class:`RetryRequests`);
    ``api_server`` is the base URL of another Bot API server (a local one, a test fake)."""
    if session is None:
        session = (AiohttpSession(api=TelegramAPIServer.from_base(api_server)) if api_server
                   else AiohttpSession())
    session.middleware(retry or RetryRequests())
    return Bot(token, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))


def create_dispatcher(service: TunerService, state: BotState,
                      telegram: TelegramConfig) -> Dispatcher:
    """The dispatcher with every command and button; handlers get ``service`` and
    ``bot_state`` injected, button handlers their ``answer`` (:class:`AnswerButtons`).
    ``dispatcher["updates_in_hand"]`` is the :class:`UpdatesInHand` to finish at shutdown.
    """
    updates_in_hand = UpdatesInHand()
    dispatcher = Dispatcher(service=service, bot_state=state, updates_in_hand=updates_in_hand,
                            disable_fsm=True)
    # On the update observer, so nothing (message, button, anything) gets past unchecked.
    dispatcher.update.outer_middleware(AllowList(telegram.allowed_users,
                                                 telegram.allow_everyone))
    dispatcher.update.outer_middleware(RememberChats(state))
    dispatcher.update.outer_middleware(updates_in_hand)
    dispatcher.update.outer_middleware(AnswerButtons())
    # Commands come from a message's text only: aiogram's Command filter also reads
    # captions, so a photo captioned "/tune 3" would start a study.
    dispatcher.message.filter(F.text)
    dispatcher.include_routers(*handlers.routers())
    return dispatcher


async def run(tuner: SmartTuner, token: str, api_server: str | None = None) -> None:
    """Serve until SIGINT or SIGTERM (aiogram's polling handles both).

    Raises :class:`bot.state.StateFolderInUse` if another bot runs on the state folder,
    and :class:`AnotherBot` when another bot polls the same token (this one then stops).
    """
    with hold_state_folder(tuner.config.state_dir):
        await _serve(tuner, token, api_server)


async def _serve(tuner: SmartTuner, token: str, api_server: str | None) -> None:
    telegram = tuner.config.telegram
    state = BotState.load(tuner.config.state_dir)
    service = TunerService(tuner)
    bot = create_bot(token, api_server)
    dispatcher = create_dispatcher(service, state, telegram)
    end_on_conflict = EndOnConflict(dispatcher.stop_polling)
    bot.session.middleware(end_on_conflict)
    notifier = Notifier(bot, service, state, telegram)
    scheduler = create_scheduler(notifier, telegram)

    async def on_startup() -> None:
        try:
            await bot.set_my_commands([BotCommand(command=command, description=what)
                                       for command, what in messages.COMMANDS])
        except TelegramAPIError as error:  # only the menu is missing; commands still work
            log.warning("could not register the command menu: %s", error)
        scheduler.start()
        log.info("bot started: polling every %g s, notifications to %s",
                 telegram.poll_interval_s,
                 telegram.chat_id or "the private chats of allowed users who write to the bot")

    async def on_shutdown() -> None:
        await dispatcher["updates_in_hand"].finish(GRACE_S, NOTICE_S)
        await notifier.close(CLOSE_S)
        if end_on_conflict.conflict is not None:  # else the chat would not know who left
            await notifier.announce(messages.another_bot_took_over(
                socket.gethostname(), tuner.config.state_dir.resolve()))
        scheduler.shutdown(wait=False)
        log.info("bot stopped; running studies go on in their workers")

    dispatcher.startup.register(on_startup)
    dispatcher.shutdown.register(on_shutdown)
    await dispatcher.start_polling(bot, handle_signals=True, close_bot_session=True)
    if end_on_conflict.conflict is not None:
        raise AnotherBot(
            "another bot is polling Telegram with the same token, so this one (state folder "
            f"{tuner.config.state_dir.resolve()}) stopped and told the chat: run one bot "
            "per token (Telegram gives each update to one of them only)")
