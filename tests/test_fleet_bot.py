"""The fleet in the chat: /status shows which hosts and devices work on what and which
standing workers idle; /workers lists every worker with its last heartbeat."""

from __future__ import annotations

import json
import os
import re
import socket
import time

from optuna.trial import TrialState

from bot.notifier import Notifier
from tests.bot_support import ALICE, BotHarness, add_study, trial
from tuner_core import SmartTuner
from tuner_core.__main__ import main
from tuner_core.storage.fleet import WORKERS, FleetMember
from tuner_core.storage.opening import open_storage

HOST = socket.gethostname()


def other_worker(tuner: SmartTuner, host: str, pid: int, devices: list[str],
                 trials: list[dict], age_s: float) -> None:
    """The row a worker on another machine wrote, its last heartbeat ``age_s`` ago."""
    with open_storage(tuner.config).engine.begin() as connection:
        connection.execute(WORKERS.insert().values(
            worker=f"{host}:{pid}", host=host, pid=pid, devices=json.dumps(devices),
            following=True, trials=json.dumps(trials), last_seen=time.time() - age_s))


async def test_status_and_workers_show_the_fleet(harness: BotHarness, tuner: SmartTuner) -> None:
    add_study(tuner, "run", [trial(value=0.5),
                             trial(TrialState.RUNNING, last_metrics={"epoch": 2})])
    engine = open_storage(tuner.config).engine
    with FleetMember(engine, ["cuda:0", "cuda:1"], following=True, interval_s=60) as member:
        member.trial_started("cuda:0", "run", 1)
        other_worker(tuner, "gpu-b", 4242, ["cuda:0"], [], age_s=5)
        other_worker(tuner, "gpu-c", 777, ["cuda:0"], [
            {"study": "run", "number": 0, "device": "cuda:0"}], age_s=600)

        await Notifier(harness.bot, harness.service, harness.state,
                       tuner.config.telegram).poll()
        [status] = await harness.send(ALICE, "/status")
        [workers] = await harness.send(ALICE, "/workers")

    assert "<b>Fleet</b>" in status.text
    assert f"🖥 {HOST} cuda:0: trial 1 of <code>run</code>" in status.text
    assert f"💤 {HOST} cuda:1: standing by" in status.text
    assert "💤 gpu-b cuda:0: standing by" in status.text
    # Ages are read when the bot answers: a loaded machine may add a second or two.
    assert re.search(r"⚠️ gpu-c \(pid 777\): lost, last heartbeat 10m 0\ds ago", status.text)

    assert "👷 <b>Workers</b> (3)" in workers.text
    assert re.search(rf"<b>{re.escape(HOST)}</b> pid {os.getpid()} · standing · working · "
                     r"heartbeat \ds ago", workers.text)
    assert "  cuda:0: trial 1 of <code>run</code>\n  cuda:1: idle" in workers.text
    assert re.search(r"<b>gpu-b</b> pid 4242 · standing · idle · heartbeat [5-9]s ago",
                     workers.text)
    assert re.search(r"<b>gpu-c</b> pid 777 · standing · lost · heartbeat 10m 0\ds ago",
                     workers.text)

    # A worker that leaves removes its row; the others stay until they leave or are dropped.
    assert [(w["host"], w["pid"]) for w in tuner.workers()] == [("gpu-b", 4242),
                                                                ("gpu-c", 777)]


async def test_workers_without_a_fleet_says_how_to_start_one(harness: BotHarness) -> None:
    [reply] = await harness.send(ALICE, "/workers")
    assert "worker --follow" in reply.text


def test_the_workers_command_prints_the_fleet(tuner: SmartTuner, capsys) -> None:
    add_study(tuner, "run", [trial(TrialState.RUNNING)])
    engine = open_storage(tuner.config).engine
    with FleetMember(engine, ["cpu:0", "cpu:1"], following=False, interval_s=60) as member:
        member.trial_started("cpu:1", "run", 0)
        assert main(["workers", "--config", str(tuner.config_path)]) == 0
    header, row = capsys.readouterr().out.splitlines()[-2:]
    assert header.split() == ["host", "pid", "devices", "following", "state", "last_seen",
                              "trials"]
    assert row.split() == [HOST, str(os.getpid()), "cpu:0,cpu:1", "False", "working", "0s",
                           "ago", "run#0@cpu:1"]
