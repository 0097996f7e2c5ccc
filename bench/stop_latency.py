"""How long a trainer takes from SIGTERM to its exit, as the tuner stops it.

    .venv/bin/python bench/stop_latency.py [--stops 3]

Starts demo-profile trainers on the demo corpus as a tuner worker does (forked by a
``python -m train.launcher``), and stops each with SIGTERM right after a validation, as
the pruner or an early-stopping criterion would. Prints, per stop, the seconds from the
signal to the trainer's exit, its exit code and its ``end`` event, and the median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from demo_study import ROOT, demo_corpus

from tuner_core.trial.process import TrainerLauncher, TrainerProcess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stops", type=int, default=3)
    args = parser.parse_args()
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    hparams = {**demo["trainer"]["hparams"], "epochs": 100}
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": str(demo["trainer"]["threads"])}
    print(f"load average at the start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    launcher = TrainerLauncher(sys.executable, ROOT, env)
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for stop in range(args.stops):
            run_dir = Path(tmp) / f"run{stop}"
            process = TrainerProcess(
                ["--data", str(demo_corpus()), "--out", str(run_dir),
                 "--cache-dir", str(Path(tmp) / "mel_cache"), "--hparams", json.dumps(hparams),
                 "--no-log-file"], run_dir, python=sys.executable, cwd=ROOT, env=env,
                launcher=launcher)
            events = process.events(poll_s=600)
            while (next(events) or {}).get("event") != "validation":
                pass
            signalled = time.perf_counter()
            code = process.terminate(grace_s=60)
            seconds.append(time.perf_counter() - signalled)
            end = [event for event in events if event and event["event"] == "end"]
            print(f"stop {stop}: {seconds[-1]:.2f} s from SIGTERM to exit, exit code {code}, "
                  f"end event {end[-1]['status'] if end else None}", flush=True)
    launcher.close()
    print(f"median over {len(seconds)} stops: {statistics.median(seconds):.2f} s; "
          f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
