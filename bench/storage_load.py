"""Storage load: how many workers one study storage holds.

    .venv/bin/python bench/storage_load.py [--workers 8,16,32] [--sqlite 8,32]
        [--per-worker 2] [--stop 32] [--timeout 600] [--max-connections M] [--epoch-s S]

For each number of workers, one study whose budget is ``--per-worker`` trials per worker,
run by that many ``python -m tuner_core worker`` processes at once, on PostgreSQL (a
throwaway local cluster on a Unix socket, tests/postgres.py, or the one that
``python3 -m tests.postgres`` started around this script) and, for ``--sqlite``, on SQLite.
Every trial is the replay trainer on the recorded demo curves (``trainer.replay:
bench/curves/demo.json.gz``, 24 epochs replayed in a fraction of a second), so the tuner
and its storage do all the work: each epoch's report, pruner and early-stopping reads,
heartbeats, the stop polls, the budget lock.

It prints, per run: trials per minute (first worker started to last one gone), the
latency of the storage operations the workers made (each call of Optuna's RDB storage
API, timed inside the workers: median and 95th percentile over all calls), the most
database connections open at once (``pg_stat_activity``), refused connections (the server
full: its refusals, and the workers' lines saying they wait), errors (other database errors
SQLAlchemy saw, warnings and tracebacks the workers logged, failed trials, workers that
exited non-zero) and the checks: the budget is exact (trials numbered 0..budget-1), no
trial ran twice (one run folder, one trainer start each), none is left running. Then
``--stop`` workers start on a large budget, a stop is requested once as many trials have
ended, and the time until the last worker has left says whether the stop reached them all.

``--max-connections M`` runs on a cluster of its own that allows M connections, so that a
small machine reaches the server's limit with fewer workers than 100 connections need.

All workers share this machine's cores: on a small machine trials per minute is bound by
the CPU (each trial starts a Python process); the latency, connections and errors are
the storage's figures.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TABLE = ROOT / "bench" / "curves" / "demo.json.gz"

# The private operations of Optuna's RDB storage that its cache in front of it
# (optuna.storages._CachedStorage, which every study of an RDB storage uses) calls.
CACHE_CALLS = {"_create_new_trial", "_set_trial_param", "_get_trials", "_get_best_trial_id",
               "_get_stale_trial_ids"}
# Sampled while the workers run.
CONNECTIONS_QUERY = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"


# --- inside a worker: time every storage call ---------------------------------------------

def probe(out: Path, argv: list[str]) -> int:
    """Run ``python -m tuner_core ARGV`` with every RDB storage call timed; the timings
    and the database errors go to ``out`` (JSON) when it exits."""
    import optuna
    import sqlalchemy

    timings: dict[str, list[float]] = collections.defaultdict(list)
    errors: collections.Counter[str] = collections.Counter()
    started: list[str] = []  # the run folder of each trial this worker started
    depth = threading.local()

    def timed(name: str, method: Any) -> Any:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            outermost = not getattr(depth, "n", 0)  # a call inside another is part of it
            depth.n = getattr(depth, "n", 0) + 1
            if name == "set_trial_user_attr" and kwargs.get("key") == "run_dir":
                started.append(kwargs["value"])  # set once per trial, as it starts
            began = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                depth.n -= 1
                if outermost:
                    timings[name].append(time.perf_counter() - began)
        return call

    storage_class = optuna.storages.RDBStorage
    for name, method in list(vars(storage_class).items()):
        if callable(method) and not name.startswith("get_heartbeat") and (
                not name.startswith("_") or name in CACHE_CALLS):  # calls of the database
            setattr(storage_class, name, timed(name, method))

    @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "handle_error")
    def count_error(context: Any) -> None:
        error = context.original_exception
        errors[f"{type(error).__name__}: {str(error).strip().splitlines()[0][:120]}"] += 1

    import tuner_core.__main__  # after the patch: the tuner's storage class derives from it

    code = 1
    try:
        code = tuner_core.__main__.main(argv)
    finally:
        out.write_text(json.dumps({"timings": timings, "errors": errors, "started": started,
                                   "exit": code}))
    return code


# --- the bench: start workers, watch the database, check the study --------------------------

def bench_config(folder: Path, storage: str, epoch_s: float) -> Path:
    """config/demo.yaml with each trial replayed (each epoch ``epoch_s`` long, if not 0),
    ``storage``, no MLflow; and a corpus of two silent clips, which the workers' checks
    read and the replay never does."""
    import numpy
    import soundfile
    import yaml

    from tests.paced import paced_python
    from train.tacotron2.hparams import HParams

    (folder / "wavs").mkdir()
    for name in ("a", "b"):
        soundfile.write(folder / "wavs" / f"{name}.wav", numpy.zeros(HParams().sampling_rate),
                        HParams().sampling_rate)
    (folder / "metadata.csv").write_text("a|Hello there.|Hello there.\nb|Good bye.|Good bye.\n")
    settings = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    settings.update(dataset_path=str(folder), state_dir=str(folder / "state"), storage=storage,
                    mlflow={"enabled": False})
    settings["trainer"].update(replay=str(TABLE), preload=False, grace_period_s=5)
    settings["trainer"]["hparams"]["artifacts"] = "none"
    if epoch_s:
        settings["trainer"]["python"] = str(paced_python(folder, epoch_s))
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@contextlib.contextmanager
def connection_sampler(cluster: Any, database: str | None) -> Iterator[list[int]]:
    """Samples of the connections open to ``database``, every 0.2 s (none for SQLite)."""
    samples: list[int] = []
    if database is None:
        yield samples
        return
    import psycopg

    done = threading.Event()

    def sample() -> None:
        with psycopg.connect(host=cluster.host, port=cluster.port, user="postgres",
                             dbname="postgres", autocommit=True) as connection:
            while not done.wait(0.2):
                samples.append(connection.execute(CONNECTIONS_QUERY, (database,)).fetchone()[0])

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()


def run_load(folder: Path, storage: str, n_workers: int, budget: int, timeout: float,
             epoch_s: float, cluster: Any = None, database: str | None = None,
             stop_after: int | None = None) -> dict[str, Any]:
    """``n_workers`` workers on one study of ``budget`` trials; a stop once ``stop_after``
    trials have ended, if given. The figures and checks of the run."""
    from optuna.trial import TrialState

    from tuner_core import SmartTuner
    from tuner_core.storage import open_storage
    from tuner_core.study import create_study

    folder.mkdir(parents=True)
    config_path = bench_config(folder, storage, epoch_s)
    tuner = SmartTuner(config_path)
    study = create_study(tuner.config, "load", budget)
    # The bench watches the study as a worker does: it waits when the server is full.
    open_storage(tuner.config).rides_out_outages = True
    load_before = os.getloadavg()[0]
    probes = [folder / f"probe-{i}.json" for i in range(n_workers)]
    logs = [folder / f"worker-{i}.log" for i in range(n_workers)]
    stop_latency = None
    with connection_sampler(cluster, database) as connections:
        started = time.perf_counter()
        workers = [subprocess.Popen([sys.executable, __file__, "--probe", str(out), "--",
                                     "worker", "--config", str(config_path), "--study", "load",
                                     "--quiet"],
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"))
                   for out, log in zip(probes, logs, strict=True)]
        deadline = started + timeout
        if stop_after is not None:
            finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            while (len(study.get_trials(deepcopy=False, states=finished)) < stop_after
                   and time.perf_counter() < deadline):
                time.sleep(0.5)
            tuner.request_stop("load", by="bench")
            stop_requested_at = time.perf_counter()
        codes = []
        for worker in workers:
            try:
                codes.append(worker.wait(max(1.0, deadline - time.perf_counter())))
            except subprocess.TimeoutExpired:
                worker.kill()
                codes.append(worker.wait())
        elapsed = time.perf_counter() - started
        if stop_after is not None:
            stop_latency = time.perf_counter() - stop_requested_at
    result = {"workers": n_workers, "budget": budget, "elapsed": elapsed,
            "load": (load_before, os.getloadavg()[0]), "connections": connections,
            "codes": codes, "stop_latency": stop_latency, **measured(probes, logs)}
    return result | checked(study, budget, result["started"], exact=stop_after is None)


def measured(probes: list[Path], logs: list[Path]) -> dict[str, Any]:
    timings: dict[str, list[float]] = collections.defaultdict(list)
    errors: collections.Counter[str] = collections.Counter()
    started: list[str] = []
    for path in probes:
        if path.exists():
            report = json.loads(path.read_text())
            for name, values in report["timings"].items():
                timings[name].extend(values)
            errors.update(report["errors"])
            started += report["started"]
    for log in logs:
        lines = log.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):  # named by its exception, the first unindented
                raised = next((later for later in lines[i + 1:]
                               if later and not later[0].isspace()), "?")
                errors[f"traceback: {raised[:120]}"] += 1
            elif " WARNING " in line or " ERROR " in line:
                errors[f"log: {line.split(' ', 3)[-1][:120]}"] += 1
    return {"timings": timings, "errors": errors, "started": started}


def waited(error: str) -> bool:
    """Whether a counted error is the database refusing a connection, or a worker saying
    it waits for one: a fleet past the server's max_connections, slowed, not broken."""
    return any(sign in error for sign in ("sorry, too many", "no free connection",
                                          "storage is unreachable", "reachable again"))


def checked(study: Any, budget: int, started: list[str], exact: bool) -> dict[str, Any]:
    """The budget is exact, no trial ran twice (``started``: the run folder of each trial
    a worker started), none is left running."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    numbers = sorted(t.number for t in trials)
    states = collections.Counter(t.state.name for t in trials)
    run_dirs = [t.user_attrs.get("run_dir") for t in trials]
    problems = []
    if numbers != list(range(len(numbers))) or (exact and len(numbers) != budget) or (
            len(numbers) > budget):
        problems.append(f"{len(numbers)} trials numbered {numbers[:3]}..{numbers[-3:]} "
                        f"for a budget of {budget}")
    if len(set(run_dirs)) != len(run_dirs) or None in run_dirs:
        problems.append("a run folder is shared or missing")
    twice = [Path(d).name for d, n in collections.Counter(started).items() if n > 1]
    if twice or len(started) != len(trials):
        problems.append(f"{len(started)} trials started for {len(trials)}; twice: {twice}")
    if states.get(TrialState.RUNNING.name) or states.get(TrialState.FAIL.name):
        problems.append(f"states {dict(states)}")
    return {"trials": len(trials), "states": dict(states), "problems": problems}


def percentiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    return statistics.median(values), statistics.quantiles(values, n=20)[-1]


def row(backend: str, result: dict[str, Any]) -> str:
    every = [v for values in result["timings"].values() for v in values]
    p50, p95 = percentiles(every)
    waits = sum(n for error, n in result["errors"].items() if waited(error))
    errors = (sum(result["errors"].values()) - waits
              + sum(code != 0 for code in result["codes"]))
    connections = max(result["connections"], default=None)
    checks = "ok" if not result["problems"] else "; ".join(result["problems"])
    return (f"| {backend} | {result['workers']} | {result['trials']} | {result['elapsed']:.0f} "
            f"| {result['trials'] / result['elapsed'] * 60:.1f} | {p50 * 1e3:.1f} / "
            f"{p95 * 1e3:.1f} | {len(every)} | {connections if connections else '-'} "
            f"| {waits} | {errors} | {result['load'][0]:.1f} -> {result['load'][1]:.1f} "
            f"| {checks} |")


def print_operations(result: dict[str, Any]) -> None:
    print(f"  operations of the {result['workers']}-worker run, ms (calls: p50 / p95 / max):")
    for name, values in sorted(result["timings"].items(), key=lambda item: -len(item[1])):
        p50, p95 = percentiles(values)
        print(f"    {name:40s} {len(values):6d}: {p50 * 1e3:7.1f} / {p95 * 1e3:7.1f} / "
              f"{max(values) * 1e3:7.1f}")
    for error, count in result["errors"].most_common(8):
        print(f"    error x{count}: {error}")


HEADER = ("| storage | workers | trials | wall s | trials/min | op p50 / p95 ms | ops "
          "| connections (max) | refused | errors | load avg | checks |\n|---|---|---|---|---|"
          "---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="8,16,32",
                        help="numbers of workers on PostgreSQL, comma-separated")
    parser.add_argument("--sqlite", default="8,32",
                        help="numbers of workers on SQLite, comma-separated ('' for none)")
    parser.add_argument("--per-worker", type=int, default=2, help="trials per worker")
    parser.add_argument("--stop", type=int, default=32,
                        help="workers of the stop run on PostgreSQL (0: none)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a run may take")
    parser.add_argument("--epoch-s", type=float, default=0.0,
                        help="seconds each replayed epoch lasts (default: as fast as it "
                             "replays); real epochs last minutes, and a worker calls the "
                             "storage a few times per epoch")
    parser.add_argument("--max-connections", type=int,
                        help="run on a cluster of its own that allows this many connections "
                             "(PostgreSQL's default is 100), to reach its limit with fewer "
                             "workers")
    parser.add_argument("--probe", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.probe:
        sys.exit(probe(args.probe, rest[1:] if rest[:1] == ["--"] else rest))

    from tests.postgres import PostgresCluster, postgres_cluster

    with contextlib.ExitStack() as stack:
        cluster = (None if args.max_connections else PostgresCluster.from_environment()) or (
            stack.enter_context(postgres_cluster(args.max_connections or 200)))
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        print(f"{os.cpu_count()} cores; {TABLE.name} replayed"
              f"{f', {args.epoch_s} s an epoch' if args.epoch_s else ''}; "
              f"{args.per_worker} trials per worker; PostgreSQL max_connections "
              f"{cluster.max_connections}")
        print(HEADER, flush=True)
        results = []
        for backend, counts in (("PostgreSQL", args.workers), ("SQLite", args.sqlite)):
            for n in [int(c) for c in counts.split(",") if c]:
                name = f"{backend.lower()}_{n}"
                database = name if backend == "PostgreSQL" else None
                storage = (cluster.create_database(name) if database
                           else f"sqlite:///{folder / name / 'optuna.db'}")
                result = run_load(folder / name, storage, n, n * args.per_worker, args.timeout,
                                  args.epoch_s, cluster, database)
                results.append(result)
                print(row(backend, result), flush=True)
        if args.stop:
            database = f"stop_{args.stop}"
            result = run_load(folder / database, cluster.create_database(database), args.stop,
                              args.stop * 50, args.timeout, args.epoch_s, cluster, database,
                              stop_after=args.stop)
            print(row("PostgreSQL, stop", result))
            left = sum(code == 0 for code in result["codes"])
            print(f"stop: {left} of {args.stop} workers left cleanly, the last "
                  f"{result['stop_latency']:.1f} s after the request; "
                  f"{result['trials']} trials of {args.stop * 50} ran")
        biggest = max((r for r in results), key=lambda r: r["workers"], default=None)
        if biggest:
            print_operations(biggest)


if __name__ == "__main__":
    main()
