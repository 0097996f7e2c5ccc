"""Scale-out: several `python -m tuner_core worker` processes on one PostgreSQL study.

The workers are real processes training real tiny models, as they would on several
machines; PostgreSQL is a throwaway cluster (tests/postgres.py).
"""

import collections
import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy
from optuna.trial import TrialState

from tests.conftest import TEST_HPARAMS
from tests.deadlines import scaled
from tests.paced import paced_python
from tests.test_tuner import ROOT, write_config
from tuner_core.config import Config, load_config
from tuner_core.storage import open_storage
from tuner_core.storage.budget_lock import LONGEST_ASK_WAIT_S, BudgetLock
from tuner_core.storage.retries import retried_from
from tuner_core.study import create_study, load_study


@contextlib.contextmanager
def workers(config_path: Path, study: str, n: int) -> Iterator[list[subprocess.Popen]]:
    """``n`` worker processes on ``study`` (logging their debug lines too); any still
    running at the end are killed."""
    started = [subprocess.Popen(
        [sys.executable, "-m", "tuner_core", "worker", "--config", str(config_path),
         "--study", study, "--quiet", "--verbose"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(n)]
    try:
        yield started
    finally:
        for worker in started:
            if worker.poll() is None:  # its trainer follows it (PR_SET_PDEATHSIG)
                worker.kill()
                worker.wait()


def finish(worker: subprocess.Popen, timeout: float = 600) -> None:
    output = worker.communicate(timeout=scaled(timeout))[0]
    assert worker.returncode == 0, output[-3000:]


def wait_until(condition, timeout: float = 120, what: str = "the condition") -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def lock_waits(config: Config) -> collections.Counter[int]:
    """How many times each worker (by pid) has said that it waits for the budget lock, in
    the log file that the workers of a machine share (with ``--verbose``). One that waits
    goes on asking until it has the lock, and says so once each time."""
    log = config.state_dir / "logs" / "smart_tuner.log"
    said = log.read_text() if log.exists() else ""
    return collections.Counter(int(pid) for pid in re.findall(
        r"\[(\d+)\] tuner_core\.storage\.budget_lock: another worker holds", said))


def queued_lock_requests(engine: sqlalchemy.Engine) -> int:
    """Lock requests waiting in the server, each holding a connection while it waits."""
    with engine.connect() as connection:
        return connection.execute(sqlalchemy.text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).scalar()


def test_two_workers_run_exactly_the_budget_and_see_each_others_results(
        corpus, mel_cache, tmp_path, postgres_url):
    # A worker that waits asks for the lock about every LONGEST_ASK_WAIT_S, and one back
    # from its trial asks at once: trials that last a fraction of a second can let one
    # worker take them all (CI saw it once). Each epoch here lasts longer than the longest
    # pause between asks; the paced interpreter wraps a trainer of its own (no preload).
    epoch_s = 3 * LONGEST_ASK_WAIT_S
    path = write_config(tmp_path, corpus, mel_cache, storage=postgres_url,
                        trainer={"hparams": {**TEST_HPARAMS, "epochs": 1}, "preload": False,
                                 "python": str(paced_python(tmp_path, epoch_s))},
                        optimization={"sampler": {"type": "tpe", "n_startup_trials": 2}})
    config = load_config(path)
    study = create_study(config, "shared", 4)
    storage = open_storage(config)
    engine = storage.engine
    study_id = storage.get_study_id_from_name(study.study_name)

    # The second worker joins while the first one's trial runs, and both then queue for the
    # budget lock: each takes a trial, and the second draws with the first's result in the
    # storage, however the machine's load skews the two.
    with (workers(path, "shared", 1) as (first,),
          BudgetLock(config.storage_url, engine, study_id) as lock):
        lock.release()
        wait_until(lambda: study.get_trials(deepcopy=False), what="the first trial")
        lock.acquire()
        waited = lock_waits(config)[first.pid]
        with workers(path, "shared", 1) as (second,):
            wait_until(lambda: lock_waits(config)[first.pid] > waited
                       and lock_waits(config)[second.pid] > 0,
                       what="both workers to wait for the budget lock")
            lock.release()
            finish(first)
            finish(second)

    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(4))
    assert all(t.state is TrialState.COMPLETE for t in trials)
    assert {t.user_attrs["worker"].split(":")[1] for t in trials} == {
        str(w.pid) for w in (first, second)}
    assert len({t.params["learning_rate"] for t in trials}) == 4  # no draw repeated
    # The sampler reads the shared storage: a trial of one worker was drawn when the other
    # worker's result was in it already.
    assert any(other.user_attrs["worker"] != trial.user_attrs["worker"]
               and other.datetime_complete < trial.datetime_start
               for trial in trials for other in trials)
    assert study.user_attrs["end_reason"] == "all trials done"


def test_a_worker_takes_its_trial_only_under_the_budget_lock(
        corpus, mel_cache, tmp_path, postgres_url):
    path = write_config(tmp_path, corpus, mel_cache, storage=postgres_url,
                        trainer={"hparams": {**TEST_HPARAMS, "epochs": 1}})
    config = load_config(path)
    study = create_study(config, "locked", 1)
    engine = open_storage(config).engine

    study_id = open_storage(config).get_study_id_from_name(study.study_name)
    with (BudgetLock(config.storage_url, engine, study_id) as lock,
          workers(path, "locked", 1) as (worker,)):
        wait_until(lambda: lock_waits(config)[worker.pid] > 0,
                   what="the worker to wait for the lock")
        assert study.get_trials() == []  # it counts and creates nothing while it waits
        # It asks again and again instead of queueing in the server, where its request
        # would hold a connection for as long as it waits: a fleet at its start would
        # need two connections per worker (bench/storage_load.py).
        assert queued_lock_requests(engine) == 0
        lock.release()
        finish(worker)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]


def test_a_killed_workers_trial_is_resumed_by_the_surviving_worker(
        corpus, mel_cache, tmp_path, postgres_url):
    path = write_config(tmp_path, corpus, mel_cache, storage=postgres_url,
                        trainer={"hparams": {**TEST_HPARAMS, "epochs": 6}})
    study = create_study(load_config(path), "kill", 2)
    with workers(path, "kill", 2) as both:

        def a_trial_at_epoch_2():
            return next((t for t in study.get_trials()
                         if (t.user_attrs.get("last_metrics") or {}).get("epoch", 0) >= 2), None)

        wait_until(a_trial_at_epoch_2, what="a trial to reach epoch 2")
        killed = a_trial_at_epoch_2()
        doomed = next(w for w in both if killed.user_attrs["worker"].endswith(f":{w.pid}"))
        survivor = next(w for w in both if w is not doomed)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        finish(survivor)

    trials = study.get_trials()
    (retry,) = [t for t in trials if retried_from(t) == killed.number]
    assert study.get_trials()[killed.number].state is TrialState.FAIL
    dead = load_study(load_config(path), "kill").trials[killed.number]  # read afresh
    assert (dead.user_attrs["outcome"], dead.user_attrs["reason"]) == (
        "failed", f"worker lost; retried as trial {retry.number}")
    assert retry.state is TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs["worker"].endswith(f":{survivor.pid}")
    log = (Path(retry.user_attrs["run_dir"]) / "train.log").read_text()
    assert f"resumed from {Path(killed.user_attrs['run_dir']) / 'last.pt'}" in log
    assert retry.user_attrs["epochs_trained"] == 6
    assert 0 < len(retry.intermediate_values) <= 4  # resumed, not retrained from scratch
    # The budget counts the killed trial once: 2 trials, plus the one that died.
    assert sorted(t.state.name for t in trials) == ["COMPLETE"] * 2 + ["FAIL"]
    assert study.user_attrs["end_reason"] == "all trials done"
