"""The notification feed read from a real (synthetic) study storage."""


import optuna
from optuna.trial import TrialState

from tests.bot_support import add_study, trial
from tuner_core import SmartTuner
from tuner_core.reporting.events import LOG_TAIL_CHARS, Kind, collect, finished_studies_backlog
from tuner_core.storage import open_storage
from tuner_core.study import create_study


def test_a_study_tells_its_story_in_order(tuner: SmartTuner) -> None:
    adaptation = {"epoch": 2, "criterion": "overfitting", "reason": "gap 0.2 > 0.15",
                  "changes": {"learning_rate": [1e-3, 5e-4]}, "time": 1.0}
    add_study(tuner, "s", [
        trial(value=0.5),
        trial(TrialState.PRUNED, outcome="pruned", criterion="pruner", stop_epoch=2,
              reason="worse than the median", recommendation="move on"),
        trial(value=0.6, adaptations=[adaptation],
              anomalies=[{"metric": "val_loss", "epoch": 2, "message": "val_loss spiked"}]),
        trial(value=0.4, outcome="early_stopped", criterion="patience"),
        trial(TrialState.FAIL, exit_code=1, reason="trainer exited with code 1",
              log_tail="x" * (LOG_TAIL_CHARS + 500)),
    ], end_reason="all trials done")

    news = collect(open_storage(tuner.config), set())
    ids = [n.id for n in news]
    assert ids == [
        "study:s:started",
        "trial:s:0:finished", "trial:s:0:best", "trial:s:1:finished",
        "trial:s:2:adapt:0", "trial:s:2:anomaly:0", "trial:s:2:finished",
        "trial:s:3:finished", "trial:s:3:best", "trial:s:4:finished", "study:s:finished"]
    by_id = {n.id: n for n in news}
    assert by_id["study:s:started"].kind is Kind.TRAINING_START
    assert by_id["study:s:started"].facts["budget"] == 4
    assert by_id["study:s:started"].facts["search_space"] == [
        "learning_rate: 0.0001 … 0.01 (log)", "lr_schedule: constant | cosine"]
    assert by_id["trial:s:0:finished"].facts["new_best"] is True
    assert by_id["trial:s:1:finished"].kind is Kind.EARLY_STOP
    assert by_id["trial:s:1:finished"].facts["recommendation"] == "move on"
    assert by_id["trial:s:2:finished"].facts["new_best"] is False  # 0.6 > 0.5
    assert by_id["trial:s:2:adapt:0"].facts["changes"] == {"learning_rate": [1e-3, 5e-4]}
    assert by_id["trial:s:2:anomaly:0"].facts["message"] == "val_loss spiked"
    assert by_id["trial:s:3:finished"].kind is Kind.EARLY_STOP
    assert by_id["trial:s:3:best"].facts["previous_value"] == 0.5
    failure = by_id["trial:s:4:finished"]
    assert failure.kind is Kind.ERROR_ALERTS
    assert len(failure.facts["log_tail"]) == LOG_TAIL_CHARS
    end = by_id["study:s:finished"]
    assert end.facts["best_trial"] == 3
    assert end.facts["counts"] == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 1}


def test_delivered_notifications_are_not_collected_again(tuner: SmartTuner) -> None:
    study = add_study(tuner, "s", [trial(value=0.5)])
    storage = open_storage(tuner.config)
    delivered = {n.id for n in collect(storage, set())}
    assert collect(storage, delivered) == []

    study.add_trial(trial(value=0.3))
    assert [n.id for n in collect(storage, delivered)] == ["trial:s:1:finished",
                                                            "trial:s:1:best"]


def test_a_finished_study_whose_end_was_delivered_is_not_read_again(tuner: SmartTuner) -> None:
    add_study(tuner, "s", [trial(value=0.5)], end_reason="all trials done")
    # Only its end is marked delivered: the study is skipped as a whole.
    assert collect(open_storage(tuner.config), {"study:s:finished"}) == []


def test_a_study_still_being_created_has_no_news_yet(tuner: SmartTuner) -> None:
    storage = open_storage(tuner.config)
    optuna.create_study(study_name="s", storage=storage)  # its attributes not written yet
    assert collect(storage, set()) == []

    create_study(tuner.config, "s", n_trials=3)  # resumed: the attributes are written
    [started] = collect(storage, set())
    assert started.id == "study:s:started" and started.facts["budget"] == 3


def test_a_trial_that_lost_its_worker_is_reported_as_such(tuner: SmartTuner) -> None:
    bare = trial(TrialState.FAIL)
    bare.user_attrs.clear()  # failed by the heartbeat check, not by the runner
    add_study(tuner, "s", [bare])
    [failure] = [n for n in collect(open_storage(tuner.config), set())
                 if n.id == "trial:s:0:finished"]
    assert failure.facts["outcome"] == "worker_lost"


def test_the_backlog_holds_only_finished_studies(tuner: SmartTuner) -> None:
    add_study(tuner, "old", [trial(value=0.5)], end_reason="all trials done")
    add_study(tuner, "new", [trial(value=0.5)])
    backlog = finished_studies_backlog(open_storage(tuner.config))
    assert backlog == {"study:old:started", "trial:old:0:finished", "trial:old:0:best",
                       "study:old:finished"}


def test_a_stopped_trial_is_counted_as_stopped_not_pruned(tuner: SmartTuner) -> None:
    add_study(tuner, "s", [
        trial(value=0.5),
        trial(TrialState.PRUNED, outcome="pruned", criterion="pruner"),
        trial(TrialState.PRUNED, outcome="stopped_by_user", criterion="user",
              reason="stopped on request"),
        trial(TrialState.FAIL, outcome=None),  # lost its worker: no outcome recorded
    ], end_reason="stopped on request")
    by_outcome = {"completed": 1, "pruned": 1, "stopped_by_user": 1, "failed": 1}

    [end] = [n for n in collect(open_storage(tuner.config), set()) if n.id == "study:s:finished"]
    assert end.facts["outcomes"] == by_outcome
    assert end.facts["counts"] == {"COMPLETE": 1, "PRUNED": 2, "FAIL": 1}  # Optuna's states
    status = tuner.status("s")
    assert status["outcomes"] == by_outcome and status["counts"]["PRUNED"] == 2
