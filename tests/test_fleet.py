"""The fleet on a throwaway PostgreSQL: standing workers (``worker --follow``), one trainer
per device (``--devices``), a database restart under a worker, and a stop that reaches a
standing worker's trials.

The workers are real processes; each trial replays a recorded run (``trainer.replay``),
paced by a stand-in interpreter that holds each validation event back a moment, so that
trials last seconds and overlap as real ones would.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import psycopg
import sqlalchemy
import yaml
from optuna.trial import TrialState

from tests.deadlines import scaled
from tests.paced import paced_python
from tests.postgres import PostgresCluster, postgres_cluster
from tests.test_replay import replay_config
from tests.test_tuner import ROOT
from tests.test_workers import wait_until
from tuner_core import SmartTuner
from tuner_core import study as study_module
from tuner_core.__main__ import main
from tuner_core.config import load_config
from tuner_core.storage import FINISHED_ATTR
from tuner_core.storage.fleet import FleetMember, fleet
from tuner_core.storage.opening import open_storage
from tuner_core.study import create_study, request_stop

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)

def fleet_config(tmp_path: Path, corpus: Path, storage: str, delay_s: float = 0.05) -> Path:
    """The replayed demo on ``storage``, every trial trained in full (no early stopping
    or pruning) at ``delay_s`` per epoch, heartbeats every second. The replay reads no
    data, but a worker checks that ``corpus`` is one before it starts."""
    path = replay_config(tmp_path, early_stopping={}, pruner={"type": "none"},
                         heartbeat_interval_s=1, heartbeat_grace_s=30)
    settings = yaml.safe_load(path.read_text())
    settings.update(storage=storage, dataset_path=str(corpus))
    settings["trainer"]["python"] = str(paced_python(tmp_path, delay_s))
    path.write_text(yaml.safe_dump(settings))
    return path


@contextlib.contextmanager
def worker(config_path: Path, *options: str) -> Iterator[subprocess.Popen]:
    """``python -m tuner_core worker OPTIONS`` (its output in ``worker-PID.log``), ended
    with SIGTERM, as a standing worker is, at the end."""
    log = config_path.parent / f"worker-{time.monotonic_ns()}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tuner_core", "worker", "--config", str(config_path),
             "--quiet", *options], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    process.log = log  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=scaled(60))


def output(process: subprocess.Popen) -> str:
    return process.log.read_text()  # type: ignore[attr-defined]


def wait_for(condition, timeout: float, what: str, *workers: subprocess.Popen) -> None:
    """Wait until ``condition()``, while every one of ``workers`` is still working."""
    def met() -> bool:
        for process in workers:
            assert process.poll() is None, f"the worker exited: {output(process)[-3000:]}"
        return condition()
    wait_until(met, timeout, what)


def wait_for_first_epochs(study: optuna.Study, worker: subprocess.Popen) -> None:
    wait_for(lambda: any(t.intermediate_values for t in study.get_trials(deepcopy=False)),
             60, "the first trial's first epochs", worker)


def finished(study: optuna.Study) -> bool:
    return bool(study.user_attrs.get(FINISHED_ATTR))


def overlap(a: optuna.trial.FrozenTrial, b: optuna.trial.FrozenTrial) -> bool:
    return a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete


def test_two_standing_workers_serve_two_studies_oldest_first(tmp_path, corpus, postgres_url):
    path = fleet_config(tmp_path, corpus, postgres_url)
    config = load_config(path)
    tuner = SmartTuner(path)
    with worker(path, "--follow") as first, worker(path, "--follow") as second:
        wait_for(lambda: len(tuner.workers()) == 2, 60, "both workers to join the fleet",
                 first, second)
        assert all(w["following"] and w["idle"] and not w["lost"] for w in tuner.workers())
        older = create_study(config, "older", 3)
        wait_for(lambda: older.get_trials(deepcopy=False), 60, "the first trial", first, second)
        newer = create_study(config, "newer", 3)
        wait_for(lambda: finished(older) and finished(newer), 120, "both studies to end",
                 first, second)
        wait_for(lambda: all(w["idle"] for w in tuner.workers()), 30, "both to idle")
        assert first.poll() is None and second.poll() is None  # they stand by for the next

    for study in (older, newer):
        trials = study.get_trials()
        assert [t.number for t in trials] == [0, 1, 2]  # the budget, each trial once
        assert all(t.state in FINISHED_STATES for t in trials), [t.state for t in trials]
        assert study.user_attrs["end_reason"] == "all trials done"
    # Oldest first: the newer study's first trial waited for the older one's last to start.
    assert min(t.datetime_start for t in newer.get_trials()) >= max(
        t.datetime_start for t in older.get_trials())
    pids = {t.user_attrs["worker"].split(":")[1] for s in (older, newer) for t in s.get_trials()}
    assert pids == {str(first.pid), str(second.pid)}
    assert tuner.workers() == []  # each removed itself on leaving


def test_a_worker_with_two_devices_runs_two_trials_at_once(tmp_path, corpus, postgres_url):
    path = fleet_config(tmp_path, corpus, postgres_url, delay_s=0.1)
    study = create_study(load_config(path), "pair", 2)
    tuner = SmartTuner(path)
    with worker(path, "--study", "pair", "--devices", "cpu:2") as pair:
        wait_for(lambda: any(len(w["trials"]) == 2 for w in tuner.workers()), 60,
                 "two trials in the fleet", pair)
        [seen] = tuner.workers()
        assert seen["devices"] == ["cpu:0", "cpu:1"] and not seen["following"]
        assert sorted(t["device"] for t in seen["trials"]) == ["cpu:0", "cpu:1"]
        assert pair.wait(timeout=scaled(60)) == 0, output(pair)[-3000:]
    first, second = study.get_trials()
    assert overlap(first, second)
    assert {first.user_attrs["device"], second.user_attrs["device"]} == {"cpu:0", "cpu:1"}
    assert {t.user_attrs["host"] for t in (first, second)} == {socket.gethostname()}
    assert finished(study)


def test_a_database_restart_under_a_standing_worker_loses_no_trial(tmp_path, corpus, postgres):
    with standing_worker_training_on_a_cluster_of_its_own(tmp_path, corpus) as (
            own, study, standing):
        outage(own)
        wait_for(lambda: finished(study), 120, "the study to end", standing)
        assert standing.poll() is None
        trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1]
    assert all(t.state is TrialState.COMPLETE for t in trials), [t.state for t in trials]
    assert all(len(t.intermediate_values) == 24 for t in trials)  # trained through it
    log = output(standing)
    assert log.count("study storage is unreachable") == 1, log[-3000:]
    assert log.count("study storage is reachable again") == 1, log[-3000:]


def test_a_worker_that_finds_the_database_full_waits_for_a_connection(tmp_path, corpus,
                                                                      postgres):
    # A cluster of its own, every connection of which the test takes.
    with postgres_cluster(max_connections=8) as own:
        path = fleet_config(tmp_path, corpus, own.create_database("full"))
        study = create_study(load_config(path), "full", 1)
        with taken_connections(own) as taken, worker(path, "--study", "full") as joining:
            wait_for(lambda: "no free connection in the storage" in output(joining), 60,
                     "the worker to wait for a connection", joining)
            assert taken
            for connection in taken:
                connection.close()
            assert joining.wait(timeout=scaled(60)) == 0, output(joining)[-3000:]
        [trial] = study.get_trials()
    assert trial.state is TrialState.COMPLETE
    assert output(joining).count("no free connection in the storage") == 1


def test_a_worker_waits_for_the_database_from_its_first_storage_call(tmp_path, corpus,
                                                                     postgres_url, monkeypatch):
    # Past the server's max_connections any call may be refused, the first ones too: the
    # worker must not leave for want of a connection before it has a trial to work on.
    path = fleet_config(tmp_path, corpus, postgres_url)
    create_study(load_config(path), "first", 1)
    riding_out_at_load = []

    def load_study(config, name):
        riding_out_at_load.append(open_storage(config).rides_out_outages)
        raise KeyboardInterrupt  # enough: the worker is not to work here

    monkeypatch.setattr(study_module, "load_study", load_study)
    with contextlib.suppress(KeyboardInterrupt):
        main(["worker", "--config", str(path), "--study", "first", "--quiet"])
    assert riding_out_at_load == [True]


@contextlib.contextmanager
def taken_connections(cluster: PostgresCluster) -> Iterator[list[psycopg.Connection]]:
    """Every connection the server has left, held open."""
    taken: list[psycopg.Connection] = []
    try:
        while True:
            try:
                taken.append(psycopg.connect(host=cluster.host, port=cluster.port,
                                             user="postgres", dbname="postgres"))
            except psycopg.OperationalError:
                break
        yield taken
    finally:
        for connection in taken:
            connection.close()


def test_workers_that_start_together_on_a_new_database_all_join_the_fleet(postgres_url):
    # The first workers on a new database race to create the fleet's table. Each member
    # here has a connection pool of its own and the pid of a worker of its own.
    members = [FleetMember(sqlalchemy.create_engine(postgres_url), ["cpu:0"], following=True,
                           interval_s=60) for _ in range(8)]
    for number, member in enumerate(members):
        member.pid = number
    together = threading.Barrier(len(members))

    def join(member: FleetMember) -> None:
        together.wait()
        member.__enter__()

    with concurrent.futures.ThreadPoolExecutor(len(members)) as pool:
        joined = [pool.submit(join, member) for member in members]
    try:
        for future in joined:
            future.result()  # raises what the member's join raised
        joined_fleet = fleet(sqlalchemy.create_engine(postgres_url), grace_s=60)
        assert sorted(w["pid"] for w in joined_fleet) == list(range(8))
    finally:
        for member, future in zip(members, joined, strict=True):
            if future.exception() is None:
                member.__exit__(None, None, None)


def test_sigterm_ends_a_standing_worker_whose_database_is_gone(tmp_path, corpus, postgres):
    with standing_worker_training_on_a_cluster_of_its_own(tmp_path, corpus) as (
            own, _, standing):
        own.stop()  # for good
        wait_for(lambda: "study storage is unreachable" in output(standing), 60,
                 "the worker to wait for the database", standing)
        standing.send_signal(signal.SIGTERM)
        standing.wait(timeout=scaled(60))  # it waited for the database for ever
    assert "SIGTERM: leaving" in output(standing)


@contextlib.contextmanager
def standing_worker_training_on_a_cluster_of_its_own(
        tmp_path: Path, corpus: Path
) -> Iterator[tuple[PostgresCluster, optuna.Study, subprocess.Popen]]:
    """A standing worker on a study of 2 trials, once its first trial has trained its first
    epochs, in a PostgreSQL cluster of its own (``postgres`` only skips the test where
    there is none): stopping the session's would cut the other test processes' connections."""
    with postgres_cluster() as own:
        path = fleet_config(tmp_path, corpus, own.create_database("fleet"), delay_s=0.2)
        study = create_study(load_config(path), "fleet", 2)
        with worker(path, "--follow") as standing:
            wait_for_first_epochs(study, standing)
            yield own, study, standing


def outage(cluster: PostgresCluster, seconds: float = 2.0) -> None:
    """The database goes away for ``seconds``, its sessions cut, and comes back."""
    cluster.stop()
    try:
        time.sleep(seconds)
    finally:
        cluster.start()


def test_a_stop_reaches_a_standing_workers_trials(tmp_path, corpus, postgres_url):
    path = fleet_config(tmp_path, corpus, postgres_url, delay_s=0.2)
    config = load_config(path)
    study = create_study(config, "stopped", 6)
    with worker(path, "--follow", "--devices", "cpu:2") as standing:
        wait_for(lambda: len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
                 == 2, 60, "two running trials", standing)
        request_stop(study, by="test")
        stopped_at = time.time()
        wait_for(lambda: finished(study), 60, "the study to end", standing)
        assert standing.poll() is None  # a standing worker stays for the next study
    trials = study.get_trials()
    assert len(trials) < 6 and all(t.state in FINISHED_STATES for t in trials)
    assert sum(t.user_attrs.get("outcome") == "stopped_by_user" for t in trials) >= 1
    assert all(t.datetime_start.timestamp() <= stopped_at for t in trials)
    assert study.user_attrs["end_reason"] == "stopped on request"


def test_sigterm_ends_a_standing_worker_mid_trial_leaving_the_trial_to_retry(
        tmp_path, corpus, postgres_url):
    path = fleet_config(tmp_path, corpus, postgres_url, delay_s=0.2)
    study = create_study(load_config(path), "left", 2)
    tuner = SmartTuner(path)
    with worker(path, "--follow") as standing:
        wait_for_first_epochs(study, standing)
        standing.send_signal(signal.SIGTERM)
        assert standing.wait(timeout=scaled(60)) == 0, output(standing)[-3000:]
    [trial] = study.get_trials()
    # Not failed: it stays running, its heartbeat stops, and another worker retries it.
    assert trial.state is TrialState.RUNNING
    assert tuner.workers() == []  # the worker left the fleet
    assert "SIGTERM: leaving" in output(standing)
