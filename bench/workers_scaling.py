"""Scale-out figures: trials per hour with one and two workers, and the storage's latency.

    .venv/bin/python bench/workers_scaling.py [--trials 6] [--epochs 2] [--ops 200]

1. The same demo-profile study (config/demo.yaml, without pruning or early stopping,
   so every trial trains the same number of epochs) run by one, then by two
   ``python -m tuner_core worker`` processes on one PostgreSQL study: first with
   torch's default threads (one per core, in each trainer), then with the cores
   shared out (``OMP_NUM_THREADS``, which the trainers inherit). Trials per hour
   count from the workers' start to the last one's exit, start-up included.
2. The Optuna storage's latency per operation a worker and the bot make, on SQLite
   and on PostgreSQL (a throwaway local cluster on a Unix socket, tests/postgres.py):
   median and 95th percentile over ``--ops`` repetitions.

Both workers share this machine's cores, so the first figure says what a second
worker adds on one box; on several GPU machines each worker has its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from demo_study import ROOT, demo_corpus

from tests.postgres import postgres_cluster
from tuner_core.config import Config, load_config
from tuner_core.storage import open_storage
from tuner_core.study import create_study


def demo_config(folder: Path, storage: str, epochs: int) -> Path:
    """config/demo.yaml with ``storage``, ``epochs`` and no pruning or early stopping."""
    settings = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    settings["trainer"]["hparams"]["epochs"] = epochs
    settings["optimization"]["pruner"] = {"type": "none"}
    settings.update(dataset_path=str(demo_corpus()), state_dir=str(folder), storage=storage,
                    early_stopping={})
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def trials_per_hour(config_path: Path, study: str, n_trials: int, n_workers: int,
                    threads: int | None) -> float:
    create_study(load_config(config_path), study, n_trials)
    command = [sys.executable, "-m", "tuner_core", "worker", "--config", str(config_path),
               "--study", study, "--quiet"]
    environ = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    started = time.perf_counter()
    workers = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, env=environ)
               for _ in range(n_workers)]
    if any(worker.wait() != 0 for worker in workers):
        sys.exit(f"a worker of study {study} failed")
    elapsed = time.perf_counter() - started
    rate = n_trials / elapsed * 3600
    print(f"  {n_workers} worker(s), {threads or 'default'} threads per trainer: "
          f"{n_trials} trials in {elapsed:6.1f} s = {rate:6.1f} trials/hour")
    return rate


def latencies(config: Config, ops: int) -> dict[str, list[float]]:
    """Seconds per call of the storage operations a trial's life makes."""
    study = create_study(config, "latency", ops)
    storage = open_storage(config)
    study_id = storage.get_study_id_from_name(study.study_name)
    timings: dict[str, list[float]] = {}

    def timed(name: str, operation: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        result = operation(*args)
        timings.setdefault(name, []).append(time.perf_counter() - started)
        return result

    for step in range(ops):
        value = 1.0 / (step + 1)
        trial = timed("ask (create a trial)", study.ask)
        timed("suggest a parameter", trial.suggest_float, "learning_rate", 1e-4, 1e-2)
        timed("report an epoch's value", trial.report, value, step)
        timed("set a user attribute", trial.set_user_attr, "last_metrics", {"epoch": 1})
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        timed("heartbeat", storage.record_heartbeat, trial_id)
        timed("tell (finish the trial)", study.tell, trial, value)
        timed("read the study's trials", study.get_trials, False)
    return timings


def print_latencies(sqlite: dict[str, list[float]], postgres: dict[str, list[float]]) -> None:
    print(f"  {'operation':28s} {'SQLite median / p95':>22s} {'PostgreSQL median / p95':>26s}")
    for name in sqlite:
        cells = []
        for timings in (sqlite[name], postgres[name]):
            p95 = statistics.quantiles(timings, n=20)[-1]
            cells.append(f"{statistics.median(timings) * 1e3:7.2f} / {p95 * 1e3:6.2f} ms")
        print(f"  {name:28s} {cells[0]:>22s} {cells[1]:>26s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--ops", type=int, default=200)
    args = parser.parse_args()
    with postgres_cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"Trials per hour, demo profile, {args.epochs} epochs per trial, PostgreSQL:")
        shared_out = max(1, (os.cpu_count() or 2) // 2)
        rates = []
        for n_workers, threads in ((1, None), (2, None), (2, shared_out)):
            run = f"scaling-{n_workers}-{threads or 'default'}"
            (folder / run).mkdir()
            path = demo_config(folder / run, cluster.create_database(run.replace("-", "_")),
                               args.epochs)
            rates.append(trials_per_hour(path, run, args.trials, n_workers, threads))
        print(f"  two workers / one worker: {rates[1] / rates[0]:.2f}x with default threads, "
              f"{rates[2] / rates[0]:.2f}x with {shared_out} thread(s) per trainer")

        print(f"Storage latency per operation, {args.ops} trials:")
        measured = []
        for name, storage in (("sqlite", f"sqlite:///{folder / 'latency.db'}"),
                              ("postgres", cluster.create_database("latency"))):
            (folder / name).mkdir()
            measured.append(latencies(load_config(demo_config(folder / name, storage, 1)),
                                      args.ops))
        print_latencies(*measured)


if __name__ == "__main__":
    main()
