"""What pruning and early stopping save: seeded demo studies, with and without.

    .venv/bin/python bench/pruning_efficiency.py [--seeds 0 1 2] [--trials 12] [--jobs 2]
                                                 [--curves curves.json]

For every seed, study A uses config/demo.yaml as it is (its pruner and early-stopping
criteria) and study B switches both off (no pruner, no criteria); same seed, sampler and
trial budget. Prints, per seed and in median over the seeds, the epochs trained, the wall
time and the best objective of each, and the ratios B/A of epochs and wall time and A/B
of the best objective (the goal: at least 3x fewer epochs, 2x less wall time, and a best
value at most 2 % worse).

``--jobs 2`` runs two studies at a time (the demo's trainers use one thread each, so on a
2-core machine each study has a core); every study's wall time is its own. ``--curves``
saves every trial's parameters, state and objective per validation, to try other pruner
settings on the same curves.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import statistics
from dataclasses import asdict, dataclass
from typing import Any

import optuna
import yaml
from demo_study import ROOT, run_demo_study

from tuner_core.trial.listener import TrialListener

MODES = {"A": "pruning + early stopping", "B": "neither"}


@dataclass
class StudyResult:
    seed: int
    mode: str
    epochs: int
    seconds: float
    best: float
    best_aligned: float  # among the trials that pass the alignment criterion
    states: dict[str, int]
    curves: list[dict[str, Any]]


class EarlyAlignment(TrialListener):
    """The trials that reach the alignment criterion's score by its epoch, as heard from
    their validations (the storage keeps only the objective of each)."""

    def __init__(self, criterion: dict[str, Any]):
        self.criterion = criterion
        self.aligned: set[int] = set()

    def trainer_event(self, trial: optuna.Trial, event: dict[str, Any],
                      objective: float | None) -> None:
        score = event.get("alignment_score")
        if (event["event"] == "validation" and event["epoch"] <= self.criterion["by_epoch"]
                and score is not None and score >= self.criterion["min_score"]):
            self.aligned.add(trial.number)


def run_study(seed: int, mode: str, trials: int) -> StudyResult:
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    changes: dict[str, Any] = {"optimization": {**demo["optimization"], "seed": seed}}
    if mode == "B":
        changes["optimization"]["pruner"] = {"type": "none"}
        changes["early_stopping"] = {}
    # The demo's alignment criterion stops a trial that does not align (it will not speak,
    # whatever its loss); study B has no criteria, so its best may be such a trial.
    alignment = EarlyAlignment(demo["early_stopping"]["alignment"])
    study_trials, seconds = run_demo_study(f"seed{seed}-{mode}", trials, alignment, **changes)
    values = [t.value for t in study_trials if t.value is not None]
    aligned = [t.value for t in study_trials
               if t.value is not None and t.number in alignment.aligned]
    states: dict[str, int] = {}
    for t in study_trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    curves = [{"number": t.number, "params": t.params, "state": t.state.name, "value": t.value,
               "outcome": t.user_attrs.get("outcome"), "criterion": t.user_attrs.get("criterion"),
               "objective": [t.intermediate_values[step]
                             for step in sorted(t.intermediate_values)]}
              for t in study_trials]
    return StudyResult(seed, mode, epochs=sum(len(t.intermediate_values) for t in study_trials),
                       seconds=seconds, best=min(values) if values else float("nan"),
                       best_aligned=min(aligned) if aligned else float("nan"),
                       states=states, curves=curves)


def print_study(result: StudyResult) -> None:
    print(f"seed {result.seed} {result.mode} ({MODES[result.mode]:24s}) epochs {result.epochs:4d}"
          f"  wall {result.seconds:7.1f} s  best objective {result.best:8.4f} "
          f"(aligned {result.best_aligned:8.4f})  {result.states}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=1, help="studies run at a time")
    parser.add_argument("--curves", help="save every trial's curve to this JSON file")
    args = parser.parse_args()
    print(f"load average at the start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs); "
          f"{len(args.seeds)} seeds x {args.trials} trials, {args.jobs} studies at a time",
          flush=True)

    results: dict[tuple[int, str], StudyResult] = {}
    with concurrent.futures.ProcessPoolExecutor(
            args.jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        # The long studies (B) first, so the short ones fill the gaps at the end.
        futures = [pool.submit(run_study, seed, mode, args.trials)
                   for mode in ("B", "A") for seed in args.seeds]
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            results[result.seed, result.mode] = result
            print_study(result)

    print("\nper seed: B/A epochs, B/A wall time, A/B best objective (and against B's best "
          "among its trials that align)")
    ratios = []
    for seed in args.seeds:
        a, b = results[seed, "A"], results[seed, "B"]
        ratio = (b.epochs / a.epochs, b.seconds / a.seconds, a.best / b.best,
                 a.best / b.best_aligned)
        ratios.append(ratio)
        print(f"seed {seed}: A epochs {a.epochs}, wall {a.seconds:.0f} s, best {a.best:.4f} | "
              f"B epochs {b.epochs}, wall {b.seconds:.0f} s, best {b.best:.4f} (aligned "
              f"{b.best_aligned:.4f}) | {ratio[0]:.2f}x fewer epochs, {ratio[1]:.2f}x less "
              f"wall, best {ratio[2]:.3f} ({ratio[3]:.3f} of the aligned)")
    epochs, wall, best, best_aligned = (statistics.median(column)
                                        for column in zip(*ratios, strict=True))
    print(f"median over {len(args.seeds)} seeds: {epochs:.2f}x fewer epochs (goal >= 3), "
          f"{wall:.2f}x less wall time (goal >= 2), best objective {best:.3f} of "
          f"the unpruned one (goal <= 1.02), {best_aligned:.3f} of its best that aligns")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    if args.curves:
        with open(args.curves, "w") as f:
            json.dump([asdict(result) for result in results.values()], f, indent=1)


if __name__ == "__main__":
    main()
