"""How much of a demo trial's value is luck: one set of hyperparameters, several seeds.

    .venv/bin/python bench/seed_spread.py [--seeds 5] [--jobs 2]
                                          [--params '{"learning_rate": 0.0035, ...}' ...]

Trains each ``--params`` set (default: two strong points of config/demo.yaml's search
space) for the demo's full epochs, once per training seed (the ``seed`` hyperparameter:
weight initialisation, batch order, dropout; the validation split stays, as it follows
``split_seed``), with no pruner and no early stopping, and prints each run's objective and
their spread. A best-value comparison between two studies
(bench/pruning_efficiency.py) cannot resolve a difference much smaller than this spread.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import statistics

import yaml
from demo_study import ROOT, run_demo_study

DEFAULT_PARAMS = [
    {"learning_rate": 0.0035, "guided_attention_weight": 2.0, "p_decoder_dropout": 0.1,
     "lr_schedule": "constant"},
    {"learning_rate": 0.0035, "guided_attention_weight": 4.0, "p_decoder_dropout": 0.1,
     "lr_schedule": "cosine"},
]


def train_once(params: dict[str, object], seed: int) -> float:
    """The objective of ``params`` trained once with the training seed ``seed``."""
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    hparams = {**demo["trainer"]["hparams"], **params, "seed": seed}
    (trial,), _ = run_demo_study(
        f"seed-{seed}", 1, trainer={**demo["trainer"], "hparams": hparams},
        hyperparameter_search_space={},
        optimization={**demo["optimization"], "pruner": {"type": "none"}}, early_stopping={})
    return trial.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="training seeds per set")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time")
    parser.add_argument("--params", type=json.loads, nargs="+", default=DEFAULT_PARAMS,
                        help="hyperparameter sets, each a JSON object")
    args = parser.parse_args()
    print(f"load average at the start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs); "
          f"{len(args.params)} sets x {args.seeds} seeds, {args.jobs} trainings at a time",
          flush=True)
    runs = [(params, seed) for params in args.params for seed in range(1, args.seeds + 1)]
    with concurrent.futures.ProcessPoolExecutor(
            args.jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        values = list(pool.map(train_once, *zip(*runs, strict=True)))
    for i, params in enumerate(args.params):
        mine = values[i * args.seeds:(i + 1) * args.seeds]
        mean, sd = statistics.mean(mine), statistics.stdev(mine)
        print(f"\n{json.dumps(params)}")
        for seed, value in enumerate(mine, start=1):
            print(f"  seed {seed}: objective {value:.4f}")
        print(f"  mean {mean:.4f}, sd {sd:.4f} ({sd / mean:.1%} of the mean), "
              f"best {min(mine):.4f}, worst {max(mine):.4f} "
              f"(worst/best {max(mine) / min(mine):.3f})")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
