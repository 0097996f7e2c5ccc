"""``python -m train.synthesize``: speak a sentence with a trained checkpoint.

    python -m train.synthesize --checkpoint RUN_DIR/best.pt --text "Hello there." --out out.wav
    python -m train.synthesize --checkpoint models:/NAME@champion --tracking-uri URI ...

``--checkpoint`` also takes a model version registered in MLflow by the tuner,
``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (a folder holding ``best.pt``), looked
up at ``--tracking-uri`` (default ``$MLFLOW_TRACKING_URI``).

The mel spectrogram is turned into audio with Griffin-Lim (no neural vocoder is
needed, so the result sounds robotic but is intelligible for a trained model).
"""

from __future__ import annotations

import argparse
import os
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


def registered_checkpoint(uri: str, tracking_uri: str | None) -> Path:
    """Download the checkpoint of the registered model version ``uri`` (``models:/...``)."""
    if not tracking_uri:
        raise CheckpointError(f"{uri}: a registered model needs --tracking-uri or "
                              f"MLFLOW_TRACKING_URI")
    # Imported only for a registered model: training itself never needs MLflow.
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)  # this process's own setting, nobody else's
    try:
        folder = mlflow.artifacts.download_artifacts(uri)
    except MlflowException as exc:
        raise CheckpointError(f"{uri}: {exc.message}") from exc
    return Path(folder) / "best.pt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.synthesize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint file, or models:/NAME@ALIAS or models:/NAME/VERSION")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="the MLflow store of a models:/ checkpoint "
                             "(default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--text", required=True)
    parser.add_argument("--out", type=Path, required=True, help="WAV file to write")
    parser.add_argument("--seed", type=int, default=0, help="the prenet's dropout is random")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    try:
        checkpoint = (registered_checkpoint(args.checkpoint, args.tracking_uri)
                      if args.checkpoint.startswith("models:/") else Path(args.checkpoint))
        model, hp = load_model(checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wav, _ = synthesize(model, hp, args.text)
    save_wav(args.out, wav, hp.sampling_rate)
    print(f"wrote {args.out} ({len(wav) / hp.sampling_rate:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
