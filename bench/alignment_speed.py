"""How much sooner the tiny model aligns with guided attention than without it.

    .venv/bin/python bench/alignment_speed.py [--target 0.7] [--max-epochs 100] [--threads 1]

Trains the tiny profile on the demo corpus (100 clips, seed 0) twice, with the same
seed, data and settings except ``guided_attention_weight`` (the profile's 2.0, and 0),
each as a real ``python -m train`` run, and stops a run at its first validation whose
``alignment_score`` reaches the target. Prints, side by side, the optimiser steps and
the CPU minutes (of the trainer process, start-up included) each took, and the ratio.
A run that never reaches the target within ``--max-epochs`` is shown as such, and the
ratio is then a lower bound. Not run by CI: it takes several CPU minutes.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.corpus import generate_corpus  # noqa: E402
from train.tacotron2.events import parse  # noqa: E402
from train.tacotron2.hparams import PROFILES  # noqa: E402


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_to_align(weight: float, data: Path, workdir: Path, target: float, max_epochs: int,
                  threads: int) -> dict:
    """Train until alignment_score >= target; steps, CPU and wall seconds, and the score."""
    hparams = {**PROFILES["tiny"], "guided_attention_weight": weight, "epochs": max_epochs,
               "artifacts": "none", "free_running_utterances": 0}
    command = [sys.executable, "-m", "train", "--data", str(data), "--out",
               str(workdir / f"weight_{weight:g}"), "--cache-dir", str(workdir / "mel_cache"),
               "--hparams", ",".join(f"{k}={v}" for k, v in hparams.items())]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cpu_before, started = children_cpu_s(), time.perf_counter()
    result = {"weight": weight, "steps": None, "score": 0.0}
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as trainer:
        for line in trainer.stdout:
            event = parse(line)
            if event is None or event["event"] != "validation":
                continue
            result["score"] = event["alignment_score"] or 0.0
            result["last_step"] = event["step"]
            if result["score"] >= target:
                result["steps"] = event["step"]
                trainer.terminate()
                break
        trainer.wait()
    result["cpu_s"] = children_cpu_s() - cpu_before
    result["wall_s"] = time.perf_counter() - started
    return result


def row(r: dict) -> str:
    reached = (f"{r['steps']:5d} steps" if r["steps"] is not None
               else f"not in {r['last_step']} steps (last score {r['score']:.2f})")
    return (f"guided_attention_weight={r['weight']:<4g} {reached:>44s}  "
            f"{r['cpu_s'] / 60:6.2f} CPU min  {r['wall_s'] / 60:6.2f} wall min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=float, default=0.7)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trainer")
    parser.add_argument("--clips", type=int, default=100, help="demo corpus size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = generate_corpus(workdir / "corpus", n=args.clips, seed=0)
        on, off = (time_to_align(weight, data, workdir, args.target, args.max_epochs,
                                 args.threads)
                   for weight in (PROFILES["tiny"]["guided_attention_weight"], 0.0))
    print(f"tiny profile, {args.clips} clips, target alignment_score >= {args.target}, "
          f"{args.threads} thread(s)")
    print(row(on))
    print(row(off))
    if on["steps"] is None:
        print("guided attention did not reach the target either; raise --max-epochs")
        return
    off_steps = off["steps"] or off["last_step"]
    bound = "" if off["steps"] is not None else "at least "
    print(f"guided attention reaches the target {bound}{off_steps / on['steps']:.1f}x sooner "
          f"in steps and {bound}{off['cpu_s'] / on['cpu_s']:.1f}x sooner in CPU time")


if __name__ == "__main__":
    main()
