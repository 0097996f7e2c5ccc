"""Test doubles for the bot: a recording Bot API session, updates, and synthetic studies.

The studies are real Optuna studies in a temporary SQLite storage, built with
``study.add_trial(create_trial(...))`` and the user attributes the runner writes, so
the bot's code reads them exactly as it reads a real study, with no training.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import optuna
import yaml
from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import Update
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from bot.app import create_bot, create_dispatcher
from bot.middlewares import RetryRequests
from bot.service import TunerService
from bot.state import BotState
from tuner_core import SmartTuner
from tuner_core.storage import FINISHED_ATTR
from tuner_core.study import create_study

TOKEN = "123456789:AAbotTokenForTheSmartTunerTests0000"
BOT_USER = {"id": 123456789, "is_bot": True, "first_name": "Smart Tuner",
            "username": "smart_tuner_bot"}
ALICE = 1001      # allow-listed
BOB = 1002        # allow-listed
MALLORY = 6666    # a stranger

NETWORK_DOWN = 0  # a RecordingSession.fail_next status: no answer at all

DISTRIBUTIONS = {"learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
                 "lr_schedule": CategoricalDistribution(["constant", "cosine"])}


class RecordingSession(BaseSession):
    """A Bot API session that records every request and answers like Telegram.

    ``fail_next`` queues error answers (429 with ``retry_after``, 5xx, 400...) that the
    next requests get instead of success; they go through aiogram's own response
    checking, so the bot sees the same exceptions as from the real server. Status
    :data:`NETWORK_DOWN` fails as aiohttp's session does when the server is unreachable.
    """

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[TelegramMethod[Any]] = []
        self._failures: list[tuple[str | None, int, str, int | None]] = []
        self._message_ids = itertools.count(100)

    def fail_next(self, status: int, description: str = "error", retry_after: int | None = None,
                  times: int = 1, api_method: str | None = None) -> None:
        """Fail the next ``times`` requests (of ``api_method`` only, when given)."""
        self._failures += [(api_method, status, description, retry_after)] * times

    def recover(self) -> None:
        """Drop the failures still queued: Telegram is back."""
        self._failures.clear()

    def calls(self, api_method: str) -> list[TelegramMethod[Any]]:
        return [r for r in self.requests if r.__api_method__ == api_method]

    def texts(self) -> list[str]:
        """The texts of every message sent or edited, and every callback answer."""
        return [getattr(r, "text", None) or getattr(r, "caption", None) or ""
                for r in self.requests if r.__api_method__ != "getMe"]

    async def make_request(self, bot: Bot, method: TelegramMethod[TelegramType],
                           timeout: int | None = None) -> TelegramType:
        self.requests.append(method)
        failure = next((f for f in self._failures if f[0] in (None, method.__api_method__)),
                       None)
        if failure is not None:
            self._failures.remove(failure)
            _, status, description, retry_after = failure
            if status == NETWORK_DOWN:
                raise TelegramNetworkError(method=method, message=description)
            envelope: dict[str, Any] = {"ok": False, "error_code": status,
                                        "description": description}
            if retry_after is not None:
                envelope["parameters"] = {"retry_after": retry_after}
            self.check_response(bot, method, status, json.dumps(envelope))
        result = self._result(method)
        response = self.check_response(bot, method, 200, json.dumps({"ok": True,
                                                                     "result": result}))
        return response.result  # type: ignore[return-value]

    def _result(self, method: TelegramMethod[Any]) -> Any:
        name = method.__api_method__
        if name == "getMe":
            return BOT_USER
        if (name.startswith("send") and name != "sendChatAction") or name == "editMessageText":
            chat_id = method.chat_id  # type: ignore[attr-defined]
            return {"message_id": getattr(method, "message_id", None) or next(self._message_ids),
                    "date": int(time.time()), "chat": {"id": chat_id, "type": "private"},
                    "from": BOT_USER, "text": getattr(method, "text", None) or ""}
        return True

    async def close(self) -> None:
        pass

    async def stream_content(self, url: str, headers: dict[str, Any] | None = None,
                             timeout: int = 30, chunk_size: int = 65536,
                             raise_for_status: bool = True) -> AsyncGenerator[bytes, None]:
        yield b""


class NoSleep:
    """A stand-in for ``asyncio.sleep`` that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def recording_bot() -> tuple[Bot, RecordingSession, NoSleep]:
    """The bot as the app builds it, on a recording session whose retries do not wait."""
    session, sleep = RecordingSession(), NoSleep()
    return create_bot(TOKEN, session=session, retry=RetryRequests(sleep=sleep)), session, sleep


# --- updates --------------------------------------------------------------------------------

_update_ids = itertools.count(1)


def message_update(user_id: int, text: str, chat_id: int | None = None,
                   chat_type: str = "private") -> Update:
    """``text`` sent by ``user_id`` in their private chat with the bot, or another chat."""
    return Update.model_validate({"update_id": next(_update_ids), "message": {
        "message_id": next(_update_ids), "date": int(time.time()), "text": text,
        "chat": {"id": user_id if chat_id is None else chat_id, "type": chat_type},
        "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}}})


def button_update(user_id: int, data: str, message_id: int = 42,
                  label: str | None = None) -> Update:
    """``user_id`` pressing a button with callback ``data`` under a bot message; with a
    ``label``, the message carries that button (else its keyboard is unknown)."""
    user = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
    message = {"message_id": message_id, "date": int(time.time()), "text": "...",
               "chat": {"id": user_id, "type": "private"}, "from": BOT_USER}
    if label is not None:
        message["reply_markup"] = {"inline_keyboard": [[{"text": label, "callback_data": data}]]}
    return Update.model_validate({"update_id": next(_update_ids), "callback_query": {
        "id": str(next(_update_ids)), "from": user, "chat_instance": "ci", "data": data,
        "message": message}})


# --- synthetic studies -----------------------------------------------------------------------

def write_config(tmp_path: Path, **telegram: Any) -> Path:
    """A config with a two-parameter search space; ``telegram`` overrides that block."""
    config = {
        "experiment_name": "bot_test",
        "dataset_path": str(tmp_path / "corpus"),
        "state_dir": str(tmp_path / "state"),
        "hyperparameter_search_space": {
            "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "log": True},
            "lr_schedule": {"type": "categorical", "choices": ["constant", "cosine"]}},
        "optimization": {"n_trials": 4},
        "telegram": {"allowed_users": [ALICE, BOB], "chat_id": ALICE,
                     "max_trials_per_study": 50, **telegram},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def add_study(tuner: SmartTuner, name: str, trials: list[optuna.trial.FrozenTrial],
              n_trials: int = 4, end_reason: str | None = None) -> optuna.Study:
    """A study with ``trials``; finished with ``end_reason`` when one is given."""
    study = create_study(tuner.config, name, n_trials)
    for trial in trials:
        study.add_trial(trial)
    if end_reason:
        study.set_user_attr("end_reason", end_reason)
        study.set_user_attr(FINISHED_ATTR, time.time())
    return study


def trial(state: TrialState = TrialState.COMPLETE, value: float | None = None,
          learning_rate: float = 1e-3, **attrs: Any) -> optuna.trial.FrozenTrial:
    """A trial as the runner leaves it; ``attrs`` add or override user attributes."""
    curve = [1.0, 0.8, value or 0.7]
    outcome = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned",
               TrialState.FAIL: "failed"}.get(state)
    user_attrs: dict[str, Any] = {
        "run_dir": "/tmp/none", "seconds": 12.0,
        "last_metrics": {"epoch": 3, "val_loss": curve[-1], "train_loss": curve[-1] * 0.9,
                         "objective": curve[-1]}}
    if outcome:
        user_attrs |= {"outcome": outcome, "stop_epoch": 3, "criterion": None,
                       "reason": "trained all 3 epochs", "recommendation": ""}
    user_attrs |= attrs
    return create_trial(
        state=state, value=value if state is TrialState.COMPLETE else None,
        params={"learning_rate": learning_rate, "lr_schedule": "cosine"},
        distributions=DISTRIBUTIONS, user_attrs=user_attrs,
        intermediate_values=dict(enumerate(curve, start=1)) if state is not TrialState.FAIL
        else {})


class BotHarness:
    """The bot's dispatcher over a tuner, fed updates directly (no polling, no network)."""

    def __init__(self, tuner: SmartTuner):
        self.bot, self.session, self.sleep = recording_bot()
        self.service = TunerService(tuner)
        self.state = BotState.load(tuner.config.state_dir)
        self.dispatcher = create_dispatcher(self.service, self.state, tuner.config.telegram)

    async def send(self, user_id: int, text: str) -> list[TelegramMethod[Any]]:
        """The requests the bot made in answer to ``text`` from ``user_id``."""
        return await self._feed(message_update(user_id, text))

    async def feed_message(self, user_id: int, text: str, chat_id: int,
                           chat_type: str) -> list[TelegramMethod[Any]]:
        """The requests the bot made in answer to ``text`` from ``user_id`` in a chat
        that is not their private one (a group)."""
        return await self._feed(message_update(user_id, text, chat_id, chat_type))

    async def press(self, user_id: int, data: str,
                    label: str | None = None) -> list[TelegramMethod[Any]]:
        """The requests the bot made in answer to a press of a button with ``data``
        (and ``label``, when the test needs the message to show it)."""
        return await self._feed(button_update(user_id, data, label=label))

    async def _feed(self, update: Update) -> list[TelegramMethod[Any]]:
        before = len(self.session.requests)
        await self.dispatcher.feed_update(self.bot, update)
        return [r for r in self.session.requests[before:] if r.__api_method__ != "getMe"]
