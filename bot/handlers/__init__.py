"""The bot's commands and buttons, one router per feature.

Each module's ``router()`` builds a fresh router, since a router joins one dispatcher.
"""

from __future__ import annotations

from aiogram import Router

from bot.handlers import best, fallback, models, plot, start, status, stop, trials, tune, workers


def routers() -> list[Router]:
    """Every router, the fallback last (it catches what the others leave)."""
    return [module.router() for module in (start, tune, status, stop, best, trials, workers,
                                           plot, models, fallback)]
