"""``python -m train.synthesize``: speak a sentence with a trained checkpoint.

    python -m train.synthesize --checkpoint RUN_DIR/best.pt --text "Hello there." --out out.wav
    python -m train.synthesize --checkpoint models:/NAME@champion --tracking-uri URI ...
    python -m train.synthesize --checkpoint best.pt --held-out CORPUS --out FOLDER

Each sentence is reported with how it ended (the stop gate fired, or decoding was cut
off at about three times a normal pace), its length and its attention's
``alignment_score`` (see :mod:`train.tacotron2.alignment`). ``--reference WAV`` (or, with
``--held-out``, the corpus's own rendering of each held-out sentence) adds the length
ratio to it: a model that speaks stops by the gate within a few tenths of the reference.

``--checkpoint`` also takes a model version registered in MLflow by the tuner,
``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (a folder holding ``best.pt``), looked
up at ``--tracking-uri`` (default ``$MLFLOW_TRACKING_URI``).

The mel spectrogram is turned into audio by the checkpoint's ``vocoder`` hparam (``auto``:
HiFi-GAN's universal generator where its weights are installed, else Griffin-Lim), or by
``--vocoder`` (see :mod:`train.tacotron2.vocoder`); each line names it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import soundfile as sf
import torch

from train.arguments import add_vocoder_argument, described, program_name
from train.tacotron2.alignment import utterance_alignment
from train.tacotron2.artifacts import Speech, synthesize
from train.tacotron2.audio import NonFiniteAudio, save_wav
from train.tacotron2.checkpoint import CheckpointError, load_checkpoint
from train.tacotron2.free_running import format_stop_metric
from train.tacotron2.hparams import HParams, HParamsError
from train.tacotron2.model import Tacotron2
from train.tacotron2.vocoder import VocoderError, load_vocoder


def load_model(checkpoint: Path, device: str = "cpu") -> tuple[Tacotron2, HParams]:
    """The model stored in ``checkpoint``, in eval mode, and its hyperparameters."""
    return model_from_state(load_checkpoint(checkpoint, map_location=device), device)


def model_from_state(state: dict, device: str = "cpu") -> tuple[Tacotron2, HParams]:
    """The model of a loaded checkpoint ``state``, in eval mode, and its hyperparameters."""
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


def sentence_table(corpus: Path, table: str) -> list[tuple[str, str, Path]]:
    """(clip id, text, reference WAV) of each line of ``corpus/table``: one of the sentence
    tables that train.corpus writes, its WAVs in the folder of the table's name
    (heldout.csv and heldout/, hard.csv and hard/)."""
    lines = (corpus / table).read_text(encoding="utf-8").splitlines()
    rows = [line.split("|") for line in lines if line]
    return [(row[0], row[1], corpus / Path(table).stem / f"{row[0]}.wav") for row in rows]


def held_out_sentences(corpus: Path) -> list[tuple[str, Path]]:
    """(text, reference WAV) of each held-out sentence of ``corpus`` (see train.corpus)."""
    if not (corpus / "heldout.csv").is_file():
        raise CheckpointError(f"{corpus / 'heldout.csv'}: no held-out sentences "
                              "(train.corpus writes them)")
    return [(text, reference) for _, text, reference in sentence_table(corpus, "heldout.csv")]


def describe(speech: Speech, hp: HParams, reference: Path | None) -> str:
    """One line: how the sentence ended, its length (against the reference) and alignment."""
    seconds = speech.frames * hp.hop_length / hp.sampling_rate
    ending = "stopped by the gate" if speech.stopped else "cut off (the gate never fired)"
    line = f"{ending} after {seconds:.2f} s"
    if reference is not None:
        expected = sf.info(reference).duration
        line += f" (reference {expected:.2f} s, ratio {seconds / expected:.2f})"
    score = utterance_alignment(torch.from_numpy(speech.alignment)).score
    return f"{line}; alignment score {score:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=program_name("train.synthesize"),
                                     description=described(__doc__, "train.synthesize"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint file, or models:/NAME@ALIAS or models:/NAME/VERSION")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="the MLflow store of a models:/ checkpoint "
                             "(default: $MLFLOW_TRACKING_URI)")
    sentences = parser.add_mutually_exclusive_group(required=True)
    sentences.add_argument("--text", help="the sentence to speak")
    sentences.add_argument("--held-out", type=Path, metavar="CORPUS",
                           help="speak the held-out sentences of a corpus made by train.corpus")
    parser.add_argument("--reference", type=Path, help="a WAV of --text to compare lengths with")
    parser.add_argument("--out", type=Path, required=True,
                        help="WAV file to write (a folder with --held-out)")
    parser.add_argument("--seed", type=int, default=0, help="the prenet's dropout is random")
    add_vocoder_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # which vocoder auto chose
    torch.manual_seed(args.seed)
    try:
        checkpoint = (registered_checkpoint(args.checkpoint, args.tracking_uri)
                      if args.checkpoint.startswith("models:/") else Path(args.checkpoint))
        state = load_checkpoint(checkpoint)
        if args.vocoder:  # before the hparams are validated: the saved one may be gone
            state["hparams"]["vocoder"] = args.vocoder
        model, hp = model_from_state(state)
        vocoder = load_vocoder(hp.vocoder, hp)
        jobs = ([(args.text, args.reference, args.out)] if args.text else
                [(text, reference, args.out / f"{reference.stem}.wav")
                 for text, reference in held_out_sentences(args.held_out)])
    except (CheckpointError, HParamsError, VocoderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if scores := state.get("validation"):  # saved by the trainer at that validation
        print(f"{args.checkpoint}: epoch {state['epoch']}, validation: val_loss "
              f"{scores['loss']:.3f}, alignment_score {scores['alignment_score']:.2f}, "
              f"stop_rate {format_stop_metric(scores['stop_rate'])}, length_ratio "
              f"{format_stop_metric(scores['length_ratio'])}")
    for text, reference, out in jobs:
        try:
            speech = synthesize(model, hp, text, vocoder)
        except NonFiniteAudio as exc:  # a diverged model
            print(f"error: {text!r}: {exc}; nothing written to {out}", file=sys.stderr)
            return 1
        save_wav(out, speech.wav, hp.sampling_rate)
        print(f"{text!r}: {describe(speech, hp, reference)}; wrote {out} ({vocoder.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
