"""The tuner's own cost per trial, in wall time and in CPU time, warm and cold.

    .venv/bin/python bench/orchestration_overhead.py [--trials 5] [--epochs 2]

Runs a short demo-profile study without pruning or early stopping twice: with trainers
forked by the worker's pre-imported launcher (``trainer.preload``, the default) and
each started cold as its own ``python -m train``. For each trial:

* wall: Optuna's start-to-complete time; the trainer's compute time is the
  ``seconds`` its events report (training, validation and its end-of-run plots and
  audio, excluding its start-up); wall overhead = wall − compute.
* CPU: what the tuner process and its children (a cold trainer, the renderers) spent
  from the trial's start to its end (``getrusage``), plus the whole CPU time of a
  trainer forked by the launcher (not our child, so read from /proc at its ``end``
  event: Linux only); the trainer's compute CPU is its CPU time between its ``start``
  and ``end`` events; CPU overhead = CPU − compute CPU: starting the trainer (imports
  when cold, model and data set-up), following its events, the storage, MLflow.

The launcher's own imports are paid once per worker, while the first trial is
prepared; they show in the first warm trial's wall time.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
from pathlib import Path
from typing import Any

import yaml
from demo_study import ROOT, run_demo_study

from tuner_core.trial.listener import TrialListener


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def process_stat(pid: int) -> tuple[int, float] | None:
    """A live process's parent pid and user + system CPU time, from /proc/PID/stat
    (None if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    utime, stime = int(fields[11]), int(fields[12])  # the stat(5) fields 14 and 15
    return int(fields[1]), (utime + stime) / os.sysconf("SC_CLK_TCK")  # field 4: ppid


class CpuMeter(TrialListener):
    """Per trial: CPU of this process, its children and its forked trainers, and the
    trainers' compute CPU."""

    def __init__(self) -> None:
        self.cpu: dict[int, float] = {}
        self.compute_cpu: dict[int, float] = {}
        self._forked_cpu: dict[int, float] = {}  # trial → CPU of trainers not our children
        self._trial_start: dict[int, float] = {}
        self._trainer_start: dict[int, tuple[int, float]] = {}  # trial → (pid, CPU)

    @staticmethod
    def _now() -> float:
        return cpu_seconds(resource.RUSAGE_SELF) + cpu_seconds(resource.RUSAGE_CHILDREN)

    def trial_started(self, trial, hparams, run_dir) -> None:
        self._trial_start[trial.number] = self._now()
        self.compute_cpu[trial.number] = 0.0
        self._forked_cpu[trial.number] = 0.0

    def trainer_event(self, trial, event: dict[str, Any], objective) -> None:
        # Each trainer run (a restart after an adaptation too) adds its start-to-end CPU.
        if event["event"] == "start":
            stat = process_stat(event["pid"])
            self._trainer_start[trial.number] = (event["pid"], stat[1] if stat else 0.0)
        elif event["event"] == "end" and trial.number in self._trainer_start:
            pid, at_start = self._trainer_start.pop(trial.number)
            stat = process_stat(pid)
            if stat is not None:
                parent, at_end = stat
                self.compute_cpu[trial.number] += at_end - at_start
                if parent != os.getpid():
                    self._forked_cpu[trial.number] += at_end

    def trial_finished(self, trial, state, value, attrs) -> None:
        # A cold trainer has been waited for by now, so RUSAGE_CHILDREN holds its CPU.
        self.cpu[trial.number] = (self._now() - self._trial_start[trial.number]
                                  + self._forked_cpu[trial.number])


def run(trials: int, epochs: int, preload: bool) -> tuple[float, float]:
    """One study; prints its trials and medians, returns the median wall and CPU overhead."""
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    trainer = {**demo["trainer"], "preload": preload,
               "hparams": {**demo["trainer"]["hparams"], "epochs": epochs}}
    optimization = {**demo["optimization"], "pruner": {"type": "none"}}
    meter = CpuMeter()
    print(f"--- trainers {'forked by the launcher (warm)' if preload else 'started cold'}")
    study_trials, _ = run_demo_study("overhead", trials, listener=meter, trainer=trainer,
                                     optimization=optimization, early_stopping={})
    rows = []
    for trial in study_trials:
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        compute = trial.user_attrs["seconds"]
        cpu, compute_cpu = meter.cpu[trial.number], meter.compute_cpu[trial.number]
        rows.append((wall, compute, wall - compute, cpu, compute_cpu, cpu - compute_cpu))
        print(f"trial {trial.number}: wall {wall:6.2f} s, trainer compute {compute:6.2f} s, "
              f"overhead {wall - compute:5.2f} s | CPU {cpu:6.2f} s, trainer compute "
              f"{compute_cpu:6.2f} s, overhead {cpu - compute_cpu:5.2f} s")
    wall, compute, overhead, cpu, compute_cpu, cpu_overhead = (
        statistics.median(column) for column in zip(*rows, strict=True))
    print(f"median over {len(rows)} trials of {epochs} epochs:\n"
          f"  wall: {wall:.2f} s, trainer compute {compute:.2f} s, "
          f"overhead {overhead:.2f} s ({overhead / wall:.0%})\n"
          f"  CPU:  {cpu:.2f} s, trainer compute {compute_cpu:.2f} s, "
          f"overhead {cpu_overhead:.2f} s ({cpu_overhead / cpu:.0%})")
    return overhead, cpu_overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    print(f"load average at the start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    warm = run(args.trials, args.epochs, preload=True)
    cold = run(args.trials, args.epochs, preload=False)
    print(f"median overhead per trial, warm vs cold: wall {warm[0]:.2f} s vs {cold[0]:.2f} s, "
          f"CPU {warm[1]:.2f} s vs {cold[1]:.2f} s")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
