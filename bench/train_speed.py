"""Training throughput of the real trainer: mel frames per second and seconds per step.

    .venv/bin/python bench/train_speed.py [--steps 5] [--device auto] [--threads N] [--amp]

Runs the tiny profile and NVIDIA's full-size model (NVIDIA's sizes and its 148-symbol
table, ``symbol_set=nvidia``) for a few optimizer steps each on a generated corpus,
after one warm-up step, and prints one line per row. On the CPU the NVIDIA row uses
batch 16 (what a CPU's memory holds); on CUDA it runs at NVIDIA's batch sizes, 64 (its
hparams) and 128 (its published A100 figure: 26,484 mel frames/s with AMP), so that
``--device cuda --amp`` compares with that figure.

``--threads`` sets torch's CPU threads (default: every core this process may use).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.arguments import positive_int
from train.corpus import generate_corpus
from train.tacotron2.hparams import PROFILES, HParams
from train.tacotron2.trainer import Trainer

NVIDIA = {"symbol_set": "nvidia"}  # NVIDIA's model sizes are HParams' defaults
NVIDIA_BATCHES = {"cpu": (16,), "cuda": (64, 128)}
VAL_FRACTION = 0.1


def rows(device: str) -> dict[str, dict]:
    """Row name → hparam overrides, for ``device`` (cpu or cuda)."""
    return {"tiny": PROFILES["tiny"],
            **{f"nvidia-b{batch}": {**NVIDIA, "batch_size": batch}
               for batch in NVIDIA_BATCHES[device]}}


def measure(name: str, overrides: dict, data: Path, workdir: Path, steps: int,
            device: str, amp: bool) -> None:
    hp = HParams.from_overrides({**overrides, "device": device, "amp": amp,
                                 "val_fraction": VAL_FRACTION})
    trainer = Trainer(hp, data, workdir / name, cache_dir=workdir / "mel_cache")
    batches = [batch.to(trainer.device)
               for batch in itertools.islice(_cycle(trainer.train_loader), steps + 1)]
    trainer.train_step(batches[0])  # warm-up: allocator, kernels
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for batch in batches[1:]:
        trainer.train_step(batch)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    frames = sum(int(b.output_lengths.sum()) for b in batches[1:])
    params = sum(p.numel() for p in trainer.model.parameters())
    precision = "amp " if trainer.amp else "fp32"
    print(f"{name:12s} {trainer.device.type:4s} {precision} params={params:>11,d} "
          f"symbols={hp.n_symbols:3d} batch={hp.batch_size:3d} r={hp.n_frames_per_step}  "
          f"{elapsed / steps:7.3f} s/step  {frames / elapsed:9.0f} mel frames/s")


def _cycle(loader):
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=5)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision, as NVIDIA's figures (CUDA only)")
    parser.add_argument("--threads", type=positive_int, default=len(os.sched_getaffinity(0)),
                        help="torch's CPU threads (default: %(default)s, this process's cores)")
    parser.add_argument("--only", help="measure one row (tiny, nvidia-b16, nvidia-b64, ...)")
    args = parser.parse_args()
    device = args.device if args.device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    if args.amp and device != "cuda":
        parser.error("--amp needs --device cuda (mixed precision is CUDA only here)")
    torch.set_num_threads(args.threads)
    setups = {name: overrides for name, overrides in rows(device).items()
              if args.only in (None, name)}
    if not setups:
        parser.error(f"--only: no row {args.only!r} on {device}; rows: "
                     f"{', '.join(rows(device))}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    # Enough utterances that the biggest batch is a full one.
    largest = max(overrides["batch_size"] for overrides in setups.values())
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = generate_corpus(workdir / "corpus", n=max(64, int(largest / (1 - VAL_FRACTION)) + 2),
                               seed=0)
        for name, overrides in setups.items():
            measure(name, overrides, data, workdir, args.steps, device, args.amp)


if __name__ == "__main__":
    main()
