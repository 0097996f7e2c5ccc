"""The bot's scheduled jobs, run by APScheduler in the bot's own event loop."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.notifier import Notifier
from tuner_core.config import TelegramConfig

log = logging.getLogger(__name__)


def create_scheduler(notifier: Notifier, telegram: TelegramConfig) -> AsyncIOScheduler:
    """Poll for news every ``poll_interval_s`` (first at once), and send the metrics
    summary every ``summary_interval_min`` when ``notifications.metrics_summary`` is on.

    A job still running when its next turn comes is not started twice, and turns missed
    while the loop was busy are run once, late, rather than dropped or piled up.
    """
    scheduler = AsyncIOScheduler(job_defaults={"max_instances": 1, "coalesce": True,
                                               "misfire_grace_time": None})
    scheduler.add_job(_ends_quietly(notifier.poll), "interval",
                      seconds=telegram.poll_interval_s, id="notifications",
                      next_run_time=datetime.now())
    if telegram.notifications.metrics_summary:
        scheduler.add_job(_ends_quietly(notifier.summary), "interval",
                          minutes=telegram.summary_interval_min, id="metrics_summary")
    return scheduler


def _ends_quietly(job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``job``, ending with one INFO line when the scheduler's shutdown cancels it (a
    SIGTERM mid-poll): APScheduler would log the cancellation as an ERROR with a
    traceback. The job's task is APScheduler's own, so ending it here ends it all the same.
    """
    @functools.wraps(job)
    async def run() -> None:
        try:
            await job()
        except asyncio.CancelledError:
            log.info("stopping: %s was cancelled; the next start goes on from there",
                     job.__name__)

    return run
