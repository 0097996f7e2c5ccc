"""Inline buttons: what each button's callback data holds, and the keyboards built of them.

Telegram gives a button at most 64 bytes of callback data, so prefixes and values are
short: a study is named by its storage id, a model by its version number. Data that
does not unpack into one of these classes (forged, or from an older bot), including a
number outside what the storage can hold, matches no handler and is answered politely
by the fallback handler. Numbers that fit are checked against the storage by the
handlers before they act (:meth:`bot.service.TunerService.study_name`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder
from pydantic import Field

# An id or number as the storage keeps it: SQLite's INTEGER, 0 … 2**63 - 1.
Number = Annotated[int, Field(ge=0, le=2**63 - 1)]


class StudyAction(StrEnum):
    REFRESH = "r"
    STOP = "s"


class StudyButton(CallbackData, prefix="st"):
    """Refresh a status message in place, or ask to stop the study."""

    action: StudyAction
    study: Number


class StopButton(CallbackData, prefix="sp"):
    """The answer to "stop this study?"."""

    study: Number
    confirm: bool


class ModelAction(StrEnum):
    PROMOTE = "p"
    EXPORT = "e"


class ModelButton(CallbackData, prefix="md"):
    """Promote a registered model version to champion, or export it as a zip."""

    action: ModelAction
    version: Number


class AudioButton(CallbackData, prefix="au"):
    """Send the audio sample of a trial."""

    study: Number
    trial: Number


def study_keyboard(study_id: int, running: bool) -> InlineKeyboardMarkup:
    """Under a status: Refresh, and Stop while the study runs."""
    builder = InlineKeyboardBuilder()
    builder.button(text="🔄 Refresh",
                   callback_data=StudyButton(action=StudyAction.REFRESH, study=study_id))
    if running:
        builder.button(text="⏹ Stop",
                       callback_data=StudyButton(action=StudyAction.STOP, study=study_id))
    return builder.as_markup()


def stop_keyboard(study_id: int) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    builder.button(text="Yes, stop it", callback_data=StopButton(study=study_id, confirm=True))
    builder.button(text="No, keep going", callback_data=StopButton(study=study_id, confirm=False))
    return builder.as_markup()


def best_keyboard(study_id: int, trial: int, version: int | None) -> InlineKeyboardMarkup:
    """Under the best trial: Promote and Export (when it is a registered model), Audio."""
    builder = InlineKeyboardBuilder()
    if version is not None:
        builder.button(text="🏆 Promote to champion",
                       callback_data=ModelButton(action=ModelAction.PROMOTE, version=version))
    builder.button(text="🔊 Audio sample", callback_data=AudioButton(study=study_id, trial=trial))
    if version is not None:
        builder.button(text="📦 Export",
                       callback_data=ModelButton(action=ModelAction.EXPORT, version=version))
    builder.adjust(1)
    return builder.as_markup()


def promote_keyboard(version: int) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    builder.button(text=f"🏆 Promote v{version} to champion",
                   callback_data=ModelButton(action=ModelAction.PROMOTE, version=version))
    return builder.as_markup()


def models_keyboard(versions: list[int]) -> InlineKeyboardMarkup | None:
    """A Promote and an Export button per version; None when there is none."""
    if not versions:
        return None
    builder = InlineKeyboardBuilder()
    for version in versions:
        builder.button(text=f"🏆 Promote v{version}",
                       callback_data=ModelButton(action=ModelAction.PROMOTE, version=version))
        builder.button(text=f"📦 Export v{version}",
                       callback_data=ModelButton(action=ModelAction.EXPORT, version=version))
    builder.adjust(2)
    return builder.as_markup()
