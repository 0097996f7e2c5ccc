"""``python -m train.synthesize``: speak a sentence with a trained checkpoint.

    python -m train.synthesize --checkpoint RUN_DIR/best.pt --text "Hello there." --out out.wav

The mel spectrogram is turned into audio with Griffin-Lim (no neural vocoder is
needed, so the result sounds robotic but is intelligible for a trained model).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from train.artifacts import synthesize
from train.audio import save_wav
from train.checkpoint import CheckpointError, load_checkpoint
from train.hparams import HParams
from train.model import Tacotron2


def load_model(checkpoint: Path, device: str = "cpu") -> tuple[Tacotron2, HParams]:
    """The model stored in ``checkpoint``, in eval mode, and its hyperparameters."""
    state = load_checkpoint(checkpoint, map_location=device)
    hp = HParams.from_dict(state["hparams"])
    model = Tacotron2(hp).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, hp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.synthesize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--out", type=Path, required=True, help="WAV file to write")
    parser.add_argument("--seed", type=int, default=0, help="the prenet's dropout is random")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    try:
        model, hp = load_model(args.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wav, _ = synthesize(model, hp, args.text)
    save_wav(args.out, wav, hp.sampling_rate)
    print(f"wrote {args.out} ({len(wav) / hp.sampling_rate:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
