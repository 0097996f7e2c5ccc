"""``python -m train.render``: a run's plots and audio sample, from its checkpoint.

    python -m train.render --checkpoint RUN_DIR/best.pt --data DATA [--out RUN_DIR/artifacts]

What the trainer writes with ``artifacts=validation|end`` (see
:func:`train.tacotron2.artifacts.render`), for a run that did not: one stopped by SIGTERM exits
at once, and its caller (the tuner, after reporting the trial) renders it here, in a
process of its own. The files are named by the checkpoint's epoch; each is announced by
an ``artifact`` event on stdout, as the trainer does. The audio sample is spoken by the
checkpoint's ``vocoder`` hparam, or by ``--vocoder``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from train.arguments import add_vocoder_argument, described, program_name
from train.tacotron2.artifacts import render
from train.tacotron2.checkpoint import CheckpointError, load_checkpoint
from train.tacotron2.data import DataError, TextMelDataset, read_utterances, split_utterances
from train.tacotron2.events import emit
from train.tacotron2.hparams import HParams, HParamsError
from train.tacotron2.model import Tacotron2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=program_name("train.render"),
                                     description=described(__doc__, "train.render"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a run's best.pt or last.pt")
    parser.add_argument("--data", type=Path, required=True, help="the corpus it was trained on")
    parser.add_argument("--cache-dir", type=Path, help="mel cache (default: none)")
    parser.add_argument("--out", type=Path,
                        help="folder to write (default: artifacts/ beside the checkpoint)")
    add_vocoder_argument(parser)
    args = parser.parse_args(argv)
    # To stderr (the run's train.log when the tuner renders): which vocoder auto chose, and
    # why a sample could not be spoken.
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        state = load_checkpoint(args.checkpoint, map_location="cpu")
        if args.vocoder:  # before the hparams are validated: the saved one may be gone
            state["hparams"]["vocoder"] = args.vocoder
        hp = HParams.from_dict(state["hparams"])
        model = Tacotron2(hp)
        model.load_state_dict(state["model"])
        _, validation = split_utterances(read_utterances(args.data), hp.val_fraction,
                                         hp.split_seed)
        if not validation:
            raise DataError(f"{args.data}: no validation utterance (val_fraction "
                            f"{hp.val_fraction})")
        dataset = TextMelDataset(validation, hp, args.cache_dir)
        run_dir = args.checkpoint.resolve().parent
        paths = render(model, hp, dataset, args.out or run_dir / "artifacts", state["epoch"],
                       state["step"], run_dir.name)
    except (CheckpointError, DataError, HParamsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for kind, path in paths.items():
        emit("artifact", epoch=state["epoch"], step=state["step"], kind=kind, path=str(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
