"""/status answers from the status the notifier's poll reads, never from the storage."""

import asyncio
import time

import pytest
from optuna.trial import TrialState

from bot import messages
from bot.notifier import Notifier
from bot.service import TunerService
from tests.bot_support import ALICE, BotHarness, add_study, trial
from tuner_core import SmartTuner


def notifier_of(harness: BotHarness, tuner: SmartTuner) -> Notifier:
    return Notifier(harness.bot, harness.service, harness.state, tuner.config.telegram)


def storage_unreachable(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every way the bot reads the storage fail, and record each attempt."""
    reads: list[str] = []

    def read(name: str):
        def refuse(*args, **kwargs):
            reads.append(name)
            raise AssertionError(f"{name} read the storage")
        return refuse

    for name in ("status", "latest_study_name", "study", "studies"):
        monkeypatch.setattr(SmartTuner, name, read(name))
    monkeypatch.setattr(TunerService, "storage", read("storage"))
    return reads


async def test_status_is_answered_from_the_polled_status_without_reading_the_storage(
        harness: BotHarness, tuner: SmartTuner, monkeypatch: pytest.MonkeyPatch) -> None:
    add_study(tuner, "run", [trial(value=0.5),
                             trial(TrialState.RUNNING, last_metrics={"epoch": 2})])
    await notifier_of(harness, tuner).poll()
    reads = storage_unreachable(monkeypatch)
    for _ in range(3):
        [reply] = await harness.send(ALICE, "/status")
        assert "<code>run</code>: running" in reply.text
        assert "Trial 1: epoch 2" in reply.text
    assert reads == []


async def test_each_poll_refreshes_the_status(harness: BotHarness, tuner: SmartTuner) -> None:
    notifier = notifier_of(harness, tuner)
    await notifier.poll()
    [reply] = await harness.send(ALICE, "/status")
    assert "No study yet" in reply.text

    study = add_study(tuner, "run", [trial(TrialState.RUNNING, last_metrics={"epoch": 1})])
    [reply] = await harness.send(ALICE, "/status")
    assert "No study yet" in reply.text  # until the next poll

    await notifier.poll()
    [reply] = await harness.send(ALICE, "/status")
    assert "<code>run</code>: running" in reply.text
    assert "1 running" in reply.text

    study.add_trial(trial(value=0.25))
    await notifier.poll()
    [reply] = await harness.send(ALICE, "/status")
    assert "Best: 0.25" in reply.text


async def test_before_the_first_poll_status_reads_once(harness: BotHarness,
                                                       tuner: SmartTuner) -> None:
    add_study(tuner, "run", [trial(value=0.5)])
    [reply] = await harness.send(ALICE, "/status")
    assert "<code>run</code>: running" in reply.text


async def test_a_read_overtaken_by_a_newer_one_does_not_replace_it(
        harness: BotHarness) -> None:
    service = harness.service
    release_old = asyncio.Event()

    async def read(name: str) -> dict:
        if name == "old":  # began first, ends last
            await release_old.wait()
        return {"study_name": name}

    names = iter(["old", "new"])
    service.status = lambda: read(next(names))  # type: ignore[method-assign]
    old = asyncio.create_task(service.refresh_status())
    await asyncio.sleep(0)  # the old read begins
    assert (await service.refresh_status())["study_name"] == "new"
    release_old.set()
    assert (await old)["study_name"] == "new"
    assert (await service.latest_status())["study_name"] == "new"


def test_an_old_status_says_how_old_it_is() -> None:
    status = {"study_name": "run", "state": "running", "end_reason": None,
              "counts": {"RUNNING": 1}, "outcomes": {"running": 1}, "n_trials": 4,
              "best_value": None, "best_trial": None, "running": [], "elapsed_s": 600.0,
              "eta_s": None}
    fresh = messages.status_text(status | {"as_of": time.time()})
    assert "as of" in fresh and "ago" not in fresh
    old = messages.status_text(status | {"as_of": time.time() - 125})
    assert "2m 05s ago" in old
