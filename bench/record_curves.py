"""Record the demo profile's learning curves once, so studies can be replayed on them.

    .venv/bin/python bench/record_curves.py [--configs 32] [--seeds 3] [--jobs 2]
                                            [--out bench/curves/demo.json.gz]

A fixed design of configurations covers config/demo.yaml's search space: a Latin
hypercube (seeded) over its continuous ranges, learning rate in log space, with the
categorical values taken in turn, so each choice appears about equally often. Each
configuration is trained in full (the demo's epochs, no pruner, no early stopping) once
per training seed (``seed``: weights, batch order, dropout; the validation split stays),
by the real trainer (``python -m train``) on the demo corpus, and every validation event
it emits is kept: the objective's inputs, alignment, stop metrics, seconds.

Resumable: each run's events go to ``<out>.runs/<config>-<seed>.json`` as it ends, and a
rerun skips the runs already there (a run cut short leaves nothing and is run again). The
table, written when all runs are in, holds the design, the seeds, the trainer's fixed
hyperparameters, the corpus, the code version (git commit) and every run; gzip keeps it
well under 2 MB. ``train.replay`` plays a run of it back to the tuner.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from scipy.stats import qmc

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "config" / "demo.yaml"
CORPUS = ROOT / ".state" / "demo_corpus"
CORPUS_SIZE = 100  # as the Makefile's demo corpus


def design(space: dict[str, dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` configurations covering ``space`` (the config's hyperparameter_search_space)."""
    continuous = [name for name, spec in space.items() if spec["type"] != "categorical"]
    categorical = [name for name, spec in space.items() if spec["type"] == "categorical"]
    points = qmc.LatinHypercube(d=len(continuous), seed=seed).random(n)
    combos = [{}]
    for name in categorical:
        combos = [{**combo, name: choice} for combo in combos
                  for choice in space[name]["choices"]]
    configs = []
    for index, point in enumerate(points):
        config: dict[str, Any] = dict(combos[index % len(combos)])
        for name, u in zip(continuous, point, strict=True):
            spec = space[name]
            if spec.get("log"):
                low, high = math.log(spec["min"]), math.log(spec["max"])
                value = math.exp(low + u * (high - low))
            else:
                value = spec["min"] + u * (spec["max"] - spec["min"])
            config[name] = int(value) if spec["type"] == "int" else round(float(value), 6)
        configs.append(config)
    return configs


def train_once(config: dict[str, Any], seed: int, fixed: dict[str, Any], corpus: Path,
               cache: Path) -> dict[str, Any]:
    """One full training of ``config`` with the training seed ``seed``; its events."""
    hparams = {**fixed, **config, "seed": seed, "artifacts": "none"}
    with tempfile.TemporaryDirectory(prefix="curve_") as run_dir:
        done = subprocess.run(
            [sys.executable, "-m", "train", "--data", str(corpus), "--out", run_dir,
             "--cache-dir", str(cache), "--hparams", json.dumps(hparams), "--no-log-file"],
            cwd=ROOT, capture_output=True, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    end = next((event for event in events if event["event"] == "end"), None)
    if end is None:
        raise RuntimeError(f"{config} seed {seed}: the trainer exited with code "
                           f"{done.returncode}: {done.stderr[-1500:]}")
    validations = [{key: value for key, value in event.items() if key not in ("event", "time")}
                   for event in events if event["event"] == "validation"]
    return {"config": config, "seed": seed, "validations": validations,
            "end": {key: end[key] for key in ("status", "epoch", "step", "seconds", "reason")},
            "exit_code": done.returncode}


def code_version() -> str:
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                          capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=32, help="configurations in the design")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per configuration")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "curves" / "demo.json.gz")
    args = parser.parse_args()

    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    fixed = demo["trainer"]["hparams"]
    configs = design(demo["hyperparameter_search_space"], args.configs)
    if not (CORPUS / "heldout.csv").is_file():
        subprocess.run([sys.executable, "-m", "train.corpus", "--out", str(CORPUS),
                        "--n", str(CORPUS_SIZE)], cwd=ROOT, check=True)
    runs_dir = args.out.with_name(args.out.name + ".runs")
    runs_dir.mkdir(parents=True, exist_ok=True)
    cache = ROOT / ".state" / "curves_mel_cache"
    todo = [(index, seed) for index in range(len(configs)) for seed in range(1, args.seeds + 1)
            if not (runs_dir / f"{index:03d}-{seed}.json").is_file()]
    total = len(configs) * args.seeds
    print(f"{len(configs)} configurations x {args.seeds} seeds: {total - len(todo)} recorded, "
          f"{len(todo)} to go, {args.jobs} at a time; load average {os.getloadavg()[0]:.2f}",
          flush=True)
    started = time.monotonic()
    cpu_before = os.times()
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(train_once, configs[index], seed, fixed, CORPUS, cache):
                   (index, seed) for index, seed in todo}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            index, seed = futures[future]
            run = future.result() | {"index": index}
            path = runs_dir / f"{index:03d}-{seed}.json"
            path.with_suffix(".tmp").write_text(json.dumps(run))
            path.with_suffix(".tmp").replace(path)  # whole, or not at all
            last = run["validations"][-1] if run["validations"] else {}
            print(f"[{done}/{len(todo)}] config {index} seed {seed}: {run['end']['status']} "
                  f"after {run['end']['epoch']} epochs, {run['end']['seconds']:.0f} s, "
                  f"val_loss {last.get('val_loss')}, alignment {last.get('alignment_score')}",
                  flush=True)
    cpu = os.times()
    print(f"recorded {len(todo)} runs in {time.monotonic() - started:.0f} s wall, "
          f"{cpu.children_user - cpu_before.children_user:.0f} s CPU (trainers)", flush=True)

    runs = [json.loads(path.read_text()) for path in sorted(runs_dir.glob("*.json"))]
    table = {
        "profile": "demo", "code_version": code_version(), "recorded_at": time.time(),
        "settings": {"config": str(DEMO_CONFIG.relative_to(ROOT)), "fixed_hparams": fixed,
                     "search_space": demo["hyperparameter_search_space"],
                     "corpus": {"generator": "python -m train.corpus", "n": CORPUS_SIZE},
                     "threads": 1, "design": "Latin hypercube, seed 0",
                     "seeds": list(range(1, args.seeds + 1))},
        "configs": configs,
        "runs": sorted(runs, key=lambda run: (run["index"], run["seed"])),
    }
    with gzip.open(args.out, "wt") as out:
        json.dump(table, out, separators=(",", ":"))
    print(f"table: {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {len(runs)} runs)")


if __name__ == "__main__":
    main()
