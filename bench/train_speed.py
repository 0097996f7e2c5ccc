"""Training throughput of the real trainer: mel frames per second and seconds per step.

    .venv/bin/python bench/train_speed.py [--steps 5] [--device auto]

Runs the tiny profile and NVIDIA's full-size model for a few optimizer steps each
on a generated corpus (batches of the same utterances for both), after one
warm-up step, on whatever device is present. Prints one line per profile.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.corpus import generate_corpus
from train.hparams import PROFILES, HParams
from train.trainer import Trainer

SETUPS = {
    "tiny": PROFILES["tiny"],
    "nvidia-full": {"batch_size": 16},  # NVIDIA's sizes; batch 16 fits a CPU's memory
}


def measure(name: str, overrides: dict, data: Path, workdir: Path, steps: int,
            device: str) -> None:
    hp = HParams.from_overrides({**overrides, "device": device, "val_fraction": 0.1})
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
    print(f"{name:12s} {trainer.device.type:4s} params={params:>11,d} batch={hp.batch_size:3d} "
          f"r={hp.n_frames_per_step}  {elapsed / steps:7.3f} s/step  "
          f"{frames / elapsed:9.0f} mel frames/s")


def _cycle(loader):
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--only", choices=sorted(SETUPS), help="measure one profile")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = generate_corpus(workdir / "corpus", n=64, seed=0)
        for name, overrides in SETUPS.items():
            if args.only in (None, name):
                measure(name, overrides, data, workdir, args.steps, args.device)


if __name__ == "__main__":
    main()
