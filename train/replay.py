"""Replay a recorded training run: the trainer's own events, from a learning-curve table.

    python -m train.replay --table bench/curves/demo.json.gz --data DATA --out RUN_DIR \\
        --hparams JSON [--resume RUN_DIR/best.pt]

It takes ``python -m train``'s arguments (and ignores those that only matter to real
training), so the tuner runs it in the trainer's place (``trainer.replay`` in the study
config): the sampler, the pruner, the early-stopping criteria, the runner and the storage
work unchanged, on a run of minutes replayed in milliseconds. ``bench/record_curves.py``
records the tables.

Which recorded run plays:

- the configuration nearest to the searched hyperparameters of ``--hparams``: categorical
  values must match (else the nearest of all), continuous ones are compared in the
  table's search ranges (log-scaled where the range is), each scaled to [0, 1];
- of its recorded training seeds, the one ``seed`` draws: ``seed`` // 100 and the
  configuration pick a seed at random (a stable hash), and ``seed`` % 100 steps from
  there. So the trials of a study with a fixed ``seed`` draw their seeds at random, and
  ``seed + 1``, ``seed + 2`` (a champion's confirmation) take the next recorded seeds,
  never the same one while there are enough.

Events come out as the trainer emitted them (``start``; per epoch ``validation`` and its
``checkpoint`` events; ``end``), each at once. A SIGTERM is honoured between epochs, as the
trainer does between steps: ``last.pt`` is "saved" and the run ends ``stopped``. A run that
diverged ends ``diverged`` with the trainer's exit code.

What cannot be replayed, and what is played instead:

- the model: checkpoints are small JSON files (``{"replay": true, "epoch": N, ...}``), so
  nothing can synthesise, render plots or be registered from them (use ``artifacts: none``);
- a resume (an adaptation restart, a retry) goes on with the *recorded* run after the
  checkpoint's epoch: the corrected hyperparameters of an adaptation change nothing;
- ``seconds`` are the recording's; a run replayed in full reports the whole run's time
  in its ``end`` event even when the tuner stopped it earlier.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import signal
import sys
import zlib
from pathlib import Path
from typing import Any

from train.arguments import program_name
from train.tacotron2.events import EXIT_DIVERGED, emit
from train.tacotron2.hparams import HParams, HParamsError

SEED_BLOCK = 100  # seed // SEED_BLOCK draws, seed % SEED_BLOCK steps (see the docstring)


def load_table(path: Path) -> dict[str, Any]:
    with gzip.open(path, "rt") as table:
        return json.load(table)


def _scaled(value: Any, spec: dict[str, Any]) -> float:
    low, high, value = float(spec["min"]), float(spec["max"]), float(value)
    if spec.get("log"):
        low, high, value = math.log(low), math.log(high), math.log(value)
    return (value - low) / (high - low) if high > low else 0.0


def nearest_config(table: dict[str, Any], hparams: dict[str, Any]) -> int:
    """The index of the recorded configuration nearest to ``hparams``."""
    space = table["settings"]["search_space"]

    def distance(config: dict[str, Any]) -> float:
        total = 0.0
        for name, spec in space.items():
            if spec["type"] == "categorical":
                total += 0.0 if hparams[name] == config[name] else 1e6
            else:
                total += (_scaled(hparams[name], spec) - _scaled(config[name], spec)) ** 2
        return total

    return min(range(len(table["configs"])), key=lambda index: distance(table["configs"][index]))


def recorded_seed(table: dict[str, Any], config: int, seed: int) -> int:
    """Which of the table's training seeds ``seed`` plays for configuration ``config``."""
    seeds = table["settings"]["seeds"]
    start = zlib.crc32(f"{seed // SEED_BLOCK}:{config}".encode()) % len(seeds)
    return seeds[(start + seed % SEED_BLOCK) % len(seeds)]


def find_run(table: dict[str, Any], hparams: dict[str, Any]) -> dict[str, Any]:
    config = nearest_config(table, hparams)
    seed = recorded_seed(table, config, hparams["seed"])
    return next(run for run in table["runs"] if run["index"] == config and run["seed"] == seed)


class Replay:
    """One recorded run, played back as the trainer's event stream."""

    def __init__(self, run: dict[str, Any], run_dir: Path, hparams: dict[str, Any],
                 resume: Path | None):
        self.run, self.run_dir, self.hparams = run, run_dir, hparams
        self.start_epoch = json.loads(resume.read_text())["epoch"] if resume else 0
        self.resumed_from = str(resume) if resume else None
        self.stop_signal: int | None = None
        self.best_val_loss = math.inf

    def _save(self, kind: str, validation: dict[str, Any], is_best: bool = False) -> None:
        path = self.run_dir / f"{kind}.pt"
        path.write_text(json.dumps({"replay": True, "epoch": validation["epoch"],
                                    "config": self.run["config"], "seed": self.run["seed"]}))
        emit("checkpoint", epoch=validation["epoch"], step=validation["step"], path=str(path),
             kind=kind, is_best=is_best, val_loss=validation.get("val_loss"))

    def __call__(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        emit("start", run_dir=str(self.run_dir), device="replay", pid=os.getpid(),
             hparams=self.hparams, n_train=None, n_val=None, epoch=self.start_epoch,
             step=0, resumed_from=self.resumed_from, threads=1)
        last: dict[str, Any] = {"epoch": self.start_epoch, "step": 0, "seconds": 0.0}
        for validation in self.run["validations"]:
            if validation["epoch"] <= self.start_epoch:
                continue
            if self.stop_signal is not None:
                self._save("last", last)
                return self._end("stopped", last, f"signal {signal.Signals(self.stop_signal).name}")
            emit("validation", **validation)
            is_best = validation["val_loss"] is not None and (
                validation["val_loss"] < self.best_val_loss)
            if is_best:
                self.best_val_loss = validation["val_loss"]
            self._save("last", validation, is_best)
            if is_best:
                self._save("best", validation, is_best)
            last = validation
        end = self.run["end"]
        status = end["status"] if end["status"] != "stopped" else "done"
        return self._end(status, last, end["reason"], seconds=end["seconds"])

    def _end(self, status: str, last: dict[str, Any], reason: str,
             seconds: float | None = None) -> int:
        best, previous = self.run_dir / "best.pt", self.run_dir / "last.pt"
        emit("end", status=status, epoch=last["epoch"], step=last["step"],
             best_val_loss=self.best_val_loss if math.isfinite(self.best_val_loss) else None,
             best_checkpoint=str(best) if best.exists() else None,
             last_checkpoint=str(previous) if previous.exists() else None,
             reason=f"replayed: {reason}",
             seconds=last["seconds"] if seconds is None else seconds)
        return EXIT_DIVERGED if status == "diverged" else 0

    def _on_signal(self, number: int, frame: object) -> None:
        self.stop_signal = number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=program_name("train.replay"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, required=True, help="a recorded curve table")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--hparams", default="{}", help="a JSON object of hyperparameters")
    parser.add_argument("--resume", type=Path, help="a replayed checkpoint to continue from")
    # python -m train's other arguments mean nothing to a replay.
    args, _ = parser.parse_known_args(argv)
    try:
        hparams = HParams.from_overrides(json.loads(args.hparams)).to_dict()
    except (HParamsError, json.JSONDecodeError) as error:
        print(f"error: --hparams: {error}", file=sys.stderr)
        return 2
    try:
        table = load_table(args.table)
    except (OSError, ValueError) as error:
        print(f"error: --table {args.table}: {error}", file=sys.stderr)
        return 2
    return Replay(find_run(table, hparams), args.out, hparams, args.resume)()


if __name__ == "__main__":
    sys.exit(main())
