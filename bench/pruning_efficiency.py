"""What pruning and early stopping save: the same seeded demo study, with and without.

    .venv/bin/python bench/pruning_efficiency.py [--trials 6]

Run A uses config/demo.yaml as it is (median pruner + early-stopping criteria);
run B switches both off (no pruner, no criteria). Same seed, same sampler, same
trial budget. Prints the epochs trained, the wall time and the best objective of
each, and their ratios.
"""

from __future__ import annotations

import argparse

import yaml
from demo_study import ROOT, run_demo_study


def summarise(label: str, trials, seconds: float) -> tuple[int, float]:
    epochs = sum(len(t.intermediate_values) for t in trials)
    values = [t.value for t in trials if t.value is not None]
    best = min(values) if values else float("nan")
    states = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    print(f"{label:28s} epochs {epochs:4d}  wall {seconds:7.1f} s  best objective {best:8.4f}  "
          f"{states}")
    return epochs, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    optimization = {**demo["optimization"], "pruner": {"type": "none"}}

    trials_a, seconds_a = run_demo_study("with-pruning", args.trials)
    epochs_a, best_a = summarise("A: pruning + early stopping", trials_a, seconds_a)
    trials_b, seconds_b = run_demo_study("without", args.trials, optimization=optimization,
                                         early_stopping={})
    epochs_b, best_b = summarise("B: neither", trials_b, seconds_b)
    print(f"A/B: epochs {epochs_a / epochs_b:.2f}, wall time {seconds_a / seconds_b:.2f}, "
          f"best objective {best_a / best_b:.3f}")


if __name__ == "__main__":
    main()
