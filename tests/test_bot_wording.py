"""What the chat reads (issue 22, items 9 and 12): commands from text only, and the
messages a user stumbled on, each said once and plainly."""

import asyncio
import time
from pathlib import Path

import pytest
from aiogram.types import Update
from optuna.trial import TrialState, create_trial

from bot import messages
from bot.notifier import Notifier
from bot.service import StartedStudy
from tests.bot_support import (
    ALICE,
    DISTRIBUTIONS,
    BotHarness,
    add_study,
    trial,
    write_config,
)
from tests.deadlines import scaled
from tuner_core import SmartTuner
from tuner_core.reporting.events import Kind, Notification
from tuner_core.rules.early_stop import Alignment, EpochMetrics
from tuner_core.storage import FINISHED_ATTR


@pytest.fixture
def tuner(tmp_path: Path) -> SmartTuner:
    return SmartTuner(write_config(tmp_path), environ={})


@pytest.fixture
def harness(tuner: SmartTuner) -> BotHarness:
    return BotHarness(tuner)


def notifier(harness: BotHarness, tuner: SmartTuner) -> Notifier:
    return Notifier(harness.bot, harness.service, harness.state, tuner.config.telegram)


def texts(harness: BotHarness) -> list[str]:
    return [r.text for r in harness.session.calls("sendMessage")]


# --- item 9: commands come from message text only ------------------------------------------------

def media_update(user_id: int, caption: str | None) -> Update:
    """A photo from ``user_id`` with ``caption`` (or none: a message without text)."""
    message = {"message_id": 7, "date": int(time.time()),
               "chat": {"id": user_id, "type": "private"},
               "from": {"id": user_id, "is_bot": False, "first_name": "user"},
               "photo": [{"file_id": "f", "file_unique_id": "u", "width": 1, "height": 1}]}
    if caption is not None:
        message |= {"caption": caption,
                    "caption_entities": [{"type": "bot_command", "offset": 0,
                                          "length": len(caption.split()[0])}]}
    return Update.model_validate({"update_id": int(time.time() * 1000) % 2**31,
                                  "message": message})


@pytest.mark.parametrize("caption", ["/tune 3", "/status", "/nonsense", None])
async def test_a_caption_or_an_empty_message_runs_no_command(harness: BotHarness,
                                                             tuner: SmartTuner,
                                                             caption: str | None) -> None:
    add_study(tuner, "s", [trial(value=0.5)])
    await harness.dispatcher.feed_update(harness.bot, media_update(ALICE, caption))
    assert [r.__api_method__ for r in harness.session.requests
            if r.__api_method__ != "getMe"] == []
    assert [study["study_name"] for study in tuner.studies()] == ["s"]


# --- item 12: a pruned trial, said once, with advice on what the study can change -------------

def alignment_pruned_trial() -> object:
    """Trial 0 as the runner leaves it when the demo's alignment criterion prunes it."""
    criterion = Alignment(min_score=0.2, by_epoch=8)
    history = [EpochMetrics(epoch=epoch, step=epoch * 10, objective=8.466, val_loss=8.466,
                            train_loss=8.0, alignment_score=0.006) for epoch in range(1, 9)]
    finding = criterion.check(history, "minimize")
    assert finding is not None
    return create_trial(
        state=TrialState.PRUNED, value=8.466,  # Optuna keeps the last intermediate value
        params={"learning_rate": 1e-3, "lr_schedule": "cosine"}, distributions=DISTRIBUTIONS,
        intermediate_values={epoch: 8.466 for epoch in range(1, 9)},
        user_attrs={"outcome": "pruned", "criterion": "alignment", "stop_epoch": 8,
                    "reason": finding.reason, "recommendation": finding.recommendation})


async def test_a_pruned_trial_is_said_once_with_advice_the_study_can_act_on(
        harness: BotHarness, tuner: SmartTuner) -> None:
    add_study(tuner, "s", [alignment_pruned_trial()])
    await notifier(harness, tuner).poll()
    [pruned] = [text for text in texts(harness) if "pruned" in text]
    assert pruned.startswith("✂️ Trial 0 of <code>s</code> pruned by alignment in ")
    assert pruned.count("epoch 8") == 1, pruned
    assert "Value" not in pruned and "8.466" not in pruned
    # The study searches learning_rate and lr_schedule (tests/bot_support.write_config).
    assert "The study searches learning_rate: later trials try other values." in pruned
    assert ("Fixed for this study, yours to change in the config: warmup_steps and "
            "p_attention_dropout.") in pruned


# --- item 12: the end of a study without a completed trial -----------------------------------

async def test_a_study_without_a_completed_trial_has_no_best_in_its_caption(
        harness: BotHarness, tuner: SmartTuner) -> None:
    study = add_study(tuner, "s", [alignment_pruned_trial()])
    news = notifier(harness, tuner)
    await news.poll()  # the first start skips finished studies: finish it after
    study.set_user_attr("end_reason", "all trials done")
    study.set_user_attr(FINISHED_ATTR, time.time())
    await news.poll()
    [photo] = harness.session.calls("sendPhoto")
    assert "best" not in photo.caption
    assert photo.caption.endswith("no trial has completed.")


# --- item 12: a cancelled request is named, and the bot said to stop, not restart ----------------

async def test_stopping_says_what_it_cancelled(harness: BotHarness,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    reading = asyncio.Event()

    async def endless_models() -> list:
        reading.set()
        await asyncio.Event().wait()
        return []

    monkeypatch.setattr(harness.service, "models", endless_models)
    command = asyncio.create_task(harness.send(ALICE, "/models"))
    await asyncio.wait_for(reading.wait(), timeout=scaled(30))
    await asyncio.wait_for(harness.dispatcher["updates_in_hand"].finish(0.1, 5),
                           timeout=scaled(30))
    assert command.done()
    assert texts(harness) == ["⏹ The bot is stopping, so your '/models' was cancelled. "
                              "Ask again once it is back."]


# --- item 12: numbers, plurals, pointers --------------------------------------------------------

def test_one_trial_is_one_trial() -> None:
    study = StartedStudy(name="s", study_id=1, n_trials=1, objective_metric="val_loss",
                         direction="minimize", search_space=[])
    assert "s</code>: 1 trial, objective" in messages.study_started(study)
    started = Notification("study:s:started", Kind.TRAINING_START, "s", {
        "budget": 1, "objective_metric": "val_loss", "direction": "minimize",
        "search_space": [], "fixed_hparams": {}})
    assert "started: 1 trial, objective" in messages.notification_text(started)
    assert messages.plural(2, "trial") == "2 trials"


@pytest.mark.parametrize(("argument", "said"), [
    ("2.5", "'2.5' is not a whole number"),
    ("３", "'３' is not a whole number"),     # a full-width digit: int() would take it
    ("1_0", "'1_0' is not a whole number"),
    ("abc", "'abc' is not a whole number"),
    ("0", "'0' is out of range")])
async def test_tune_takes_ascii_whole_numbers_only(harness: BotHarness, argument: str,
                                                   said: str) -> None:
    [reply] = await harness.send(ALICE, f"/tune {argument}")
    assert reply.text.startswith(said), reply.text
    assert "Usage: /tune N" in reply.text


async def test_best_without_a_study_points_to_tune(harness: BotHarness,
                                                  tuner: SmartTuner) -> None:
    [reply] = await harness.send(ALICE, "/best")
    assert reply.text == "No study yet. Start one with /tune N."
    add_study(tuner, "s", [trial(TrialState.RUNNING)])
    [reply] = await harness.send(ALICE, "/best")
    assert reply.text == ("No trial of <code>s</code> has completed yet; /status shows how "
                          "it goes.")


async def test_trials_cuts_a_long_reason_between_words(harness: BotHarness,
                                                       tuner: SmartTuner) -> None:
    reason = ("alignment_score 0.006 is below 0.2 at epoch 8 and the attention never "
              "became diagonal")
    add_study(tuner, "s", [trial(value=0.5, reason=reason)])
    [reply] = await harness.send(ALICE, "/trials")
    row = reply.text.split("\n")[-1].removesuffix("</pre>")
    shown = row.split("  ", 1)[1].strip().split("  ")[-1]
    assert shown.endswith(" …"), row
    assert reason.startswith(shown.removesuffix(" …")), row
    assert reason[len(shown.removesuffix(" …"))] == " ", row  # cut at a word's end
    assert len(shown) <= messages.REASON_WIDTH
