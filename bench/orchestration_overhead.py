"""The tuner's own cost per trial: trial wall time minus the trainer's compute time.

    .venv/bin/python bench/orchestration_overhead.py [--trials 5] [--epochs 2]

Runs a short demo-profile study without pruning or early stopping. For each trial,
the wall time is Optuna's start-to-complete time; the trainer's compute time is the
``seconds`` its events report (training and validation, excluding its start-up).
The difference is what orchestration costs: starting the trainer process (Python,
torch and librosa imports, data checks), following its events, and the storage.
"""

from __future__ import annotations

import argparse
import statistics

import yaml
from demo_study import ROOT, run_demo_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    trainer = {**demo["trainer"], "hparams": {**demo["trainer"]["hparams"],
                                              "epochs": args.epochs}}
    optimization = {**demo["optimization"], "pruner": {"type": "none"}}
    trials, _ = run_demo_study("overhead", args.trials, trainer=trainer,
                               optimization=optimization, early_stopping={})
    rows = []
    for trial in trials:
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        compute = trial.user_attrs["seconds"]
        rows.append((wall, compute, wall - compute))
        print(f"trial {trial.number}: wall {wall:6.2f} s  trainer compute {compute:6.2f} s  "
              f"overhead {wall - compute:5.2f} s")
    wall, compute, overhead = (statistics.median(column) for column in zip(*rows, strict=True))
    print(f"median over {len(rows)} trials: wall {wall:.2f} s, trainer compute {compute:.2f} s, "
          f"overhead {overhead:.2f} s ({overhead / wall:.0%} of a {args.epochs}-epoch trial)")


if __name__ == "__main__":
    main()
