"""``python -m train.evaluate``: judge a checkpoint as a listener would, on the held-out
and hard sentences of a corpus made by ``train.corpus``.

    python -m train.evaluate --checkpoint RUN_DIR/best.pt --held-out CORPUS [--vocoder V]
    python -m train.evaluate --checkpoint models:/NAME@champion --tracking-uri URI --held-out CORPUS
    python -m train.evaluate --held-out CORPUS --references --vocoder hifigan_universal

Each sentence is spoken from its text alone (free-running, as ``train.synthesize`` does)
and reported with: whether the stop gate ended it, its length against the corpus's own
recording, the recogniser's character error rate on it beside the rate on the recording
(the ceiling; :mod:`train.tacotron2.intelligibility`) and their ratio, the mel-cepstral
distortion of its mel from the recording's (:mod:`train.tacotron2.mcd`), and the words its
attention skipped or repeated (:mod:`train.tacotron2.robustness`). A summary line ends it,
and a line of CPU seconds per sentence for each measurement.

``--references`` checks a vocoder instead of a model: the recordings' own mels go through
it (copy synthesis), and the same measures compare them with the recordings.

A dataset without ``heldout.csv`` (a user's LJSpeech folder) is judged on the first
``--sentences`` utterances of the checkpoint's validation split instead (the line before
the sentences says so). ``--json PATH`` also writes the summary as JSON, for the tuner
(:func:`summary_measures`), and says so on stdout with an ``artifact`` event of kind
``listening`` (:mod:`train.tacotron2.events`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from train.arguments import add_vocoder_argument, described, positive_int, program_name
from train.synthesize import model_from_state, registered_checkpoint, sentence_table
from train.tacotron2.artifacts import synthesize
from train.tacotron2.audio import MelSpectrogram, NonFiniteAudio, load_wav
from train.tacotron2.checkpoint import CheckpointError, load_checkpoint
from train.tacotron2.data import DataError, read_utterances, split_utterances
from train.tacotron2.events import emit
from train.tacotron2.hparams import HParams, HParamsError
from train.tacotron2.intelligibility import (
    ENGLISH,
    Intelligibility,
    Recognizer,
    RecognizerError,
    bundled_model,
    character_error_rate,
    open_recognizer,
    vocabulary,
)
from train.tacotron2.mcd import mel_cepstral_distortion
from train.tacotron2.model import Tacotron2
from train.tacotron2.robustness import Robustness, utterance_robustness
from train.tacotron2.vocoder import Vocoder, VocoderError, load_vocoder

JUDGED_TABLES = ("heldout.csv", "hard.csv")  # train.corpus's sentences a model is judged on


class Sentence(NamedTuple):
    clip_id: str
    text: str
    recording: Path


class Judgement(NamedTuple):
    stopped: bool | None  # None for a recording's copy synthesis: no gate
    length_ratio: float
    heard: str | None  # None with the recogniser off
    heard_in_recording: str | None
    mcd: float
    robustness: Robustness | None


def corpus_sentences(corpus: Path) -> list[Sentence]:
    """The held-out and (where the corpus has them) hard sentences of ``corpus``."""
    sentences = []
    for table in JUDGED_TABLES:
        if not (corpus / table).is_file():
            logging.warning("%s: not found (made again by train.corpus)", corpus / table)
            continue
        sentences += [Sentence(*row) for row in sentence_table(corpus, table)]
    return sentences


def validation_sentences(corpus: Path, hp: HParams, n: int) -> list[Sentence]:
    """The first ``n`` utterances of the validation split ``hp`` trained with: a corpus
    without held-out sentences has none other the model has not learned from."""
    _, validation = split_utterances(read_utterances(corpus), hp.val_fraction, hp.split_seed)
    if not validation:
        raise DataError(f"{corpus}: no heldout.csv, and val_fraction {hp.val_fraction} "
                        "leaves no validation utterance to judge")
    return [Sentence(u.audio_path.stem, u.text, u.audio_path) for u in validation[:n]]


class Costs:
    """CPU seconds spent on each measurement."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, what: str) -> Iterator[None]:
        started = time.process_time()
        yield
        self.seconds[what] += time.process_time() - started

    def line(self, n: int) -> str:
        return "CPU s per sentence: " + ", ".join(f"{what} {seconds / n:.2f}"
                                                  for what, seconds in self.seconds.items())


def judge(sentence: Sentence, hp: HParams, vocoder: Vocoder, model: Tacotron2 | None,
          recognizer: Recognizer | None, costs: Costs) -> Judgement:
    """Speak ``sentence`` with ``model`` (None: copy synthesis of the recording) and measure it."""
    features = MelSpectrogram(hp)
    recording = load_wav(sentence.recording, hp.sampling_rate)
    reference = features(torch.from_numpy(recording))
    if model is None:
        with costs("vocoder"):
            wav = vocoder(reference)
        mel, stopped, robustness = features(torch.from_numpy(wav)), None, None
        frames = mel.shape[-1]
    else:
        with costs("synthesis"):
            speech = synthesize(model, hp, sentence.text, vocoder)
        wav, mel, stopped, frames = speech.wav, speech.mel, speech.stopped, speech.frames
        with costs("robustness"):
            robustness = utterance_robustness(speech.alignment, sentence.text, hp.symbol_set)
    heard = heard_in_recording = None
    if recognizer is not None:
        with costs("recogniser"):
            heard = recognizer(wav, hp.sampling_rate)
            heard_in_recording = recognizer(recording, hp.sampling_rate)
    with costs("mcd"):
        mcd = mel_cepstral_distortion(mel, reference)
    return Judgement(stopped, frames / reference.shape[-1], heard, heard_in_recording, mcd,
                     robustness)


def describe(sentence: Sentence, judged: Judgement) -> str:
    """One line per sentence."""
    parts = [sentence.clip_id]
    if judged.stopped is not None:
        parts.append("stopped by the gate" if judged.stopped else "cut off")
    parts.append(f"length {judged.length_ratio:.2f}")
    if judged.heard is not None:
        parts.append(str(Intelligibility(character_error_rate([sentence.text], [judged.heard]),
                                         character_error_rate([sentence.text],
                                                              [judged.heard_in_recording]))))
    parts.append(f"MCD {judged.mcd:.1f} dB")
    if judged.robustness is not None:
        parts.append("skipped " + (" | ".join(judged.robustness.skipped) or "-"))
        parts.append("repeated " + (" | ".join(judged.robustness.repeated) or "-"))
    line = ", ".join(parts)
    return line + (f"; heard {judged.heard!r}" if judged.heard is not None else "")


def summary_measures(sentences: list[Sentence], judged: list[Judgement]) -> dict[str, Any]:
    """The summary over all sentences, as JSON-able data: ``sentences``, ``stopped`` and
    ``stop_rate`` (share the gate stopped), ``length_ratio`` (mean), ``cer``,
    ``cer_reference`` and ``cer_ratio``, ``mcd`` (mean dB), ``skipped`` and ``repeated``
    (utterances with such words), ``hard`` (hard sentences) and ``skipped_hard``,
    ``repeated_hard`` among them, ``skipped_words`` and ``repeated_words`` ({clip: words});
    None where not measured (the gate and attention of a copy synthesis, CER without the
    recogniser)."""
    n = len(judged)
    measures: dict[str, Any] = {"sentences": n, "stopped": None, "stop_rate": None,
                                "length_ratio": float(np.mean([j.length_ratio for j in judged])),
                                "cer": None, "cer_reference": None, "cer_ratio": None,
                                "mcd": float(np.mean([j.mcd for j in judged]))}
    if judged[0].stopped is not None:
        measures["stopped"] = sum(bool(j.stopped) for j in judged)
        measures["stop_rate"] = measures["stopped"] / n
    if judged[0].heard is not None:
        texts = [s.text for s in sentences]
        heard = Intelligibility(
            character_error_rate(texts, [j.heard for j in judged]),
            character_error_rate(texts, [j.heard_in_recording for j in judged]))
        measures |= {"cer": heard.cer, "cer_reference": heard.reference_cer,
                     "cer_ratio": heard.ratio}
    hard = [s.clip_id.startswith("HARD") for s in sentences]
    measures["hard"] = sum(hard)
    for fault in ("skipped", "repeated"):
        faulty = {s.clip_id: " | ".join(getattr(j.robustness, fault))
                  for s, j in zip(sentences, judged, strict=True)
                  if j.robustness is not None and getattr(j.robustness, fault)}
        measured = judged[0].robustness is not None
        measures |= {fault: len(faulty) if measured else None,
                     f"{fault}_hard": sum(clip.startswith("HARD") for clip in faulty)
                     if measured else None,
                     f"{fault}_words": faulty}
    return measures


def summary(measures: dict[str, Any]) -> str:
    """The summary line, from :func:`summary_measures`."""
    n = measures["sentences"]
    parts = [f"{n} sentences"]
    if measures["stopped"] is not None:
        parts.append(f"gate stopped {measures['stopped']}/{n}")
    parts.append(f"length {measures['length_ratio']:.2f}")
    if measures["cer"] is not None:
        parts.append(str(Intelligibility(measures["cer"], measures["cer_reference"])))
    parts.append(f"MCD {measures['mcd']:.1f} dB")
    for fault in ("skipped", "repeated"):
        if measures[fault] is not None:
            parts.append(f"{fault} words in {measures[fault]}/{n} "
                         f"({measures[f'{fault}_hard']}/{measures['hard']} hard)")
    return "summary: " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=program_name("train.evaluate"),
                                     description=described(__doc__, "train.evaluate"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a checkpoint file, or models:/NAME@ALIAS or "
                                             "models:/NAME/VERSION (not needed with --references)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="the MLflow store of a models:/ checkpoint "
                             "(default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--held-out", type=Path, required=True, metavar="CORPUS",
                        help="a corpus made by train.corpus (its heldout.csv and hard.csv)")
    parser.add_argument("--references", action="store_true",
                        help="copy synthesis of the recordings through the vocoder, no model")
    parser.add_argument("--recognizer", default=ENGLISH, metavar="MODEL_DIR",
                        help=f"a pocketsphinx model folder, {ENGLISH} (bundled, the default) "
                             f"or off")
    parser.add_argument("--seed", type=int, default=0, help="the prenet's dropout is random")
    parser.add_argument("--sentences", type=positive_int, default=3, metavar="N",
                        help="validation utterances judged where the corpus has no "
                             "heldout.csv (default: 3)")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also write the summary here as JSON (for the tuner)")
    add_vocoder_argument(parser)
    args = parser.parse_args(argv)
    if not args.references and not args.checkpoint:
        parser.error("--checkpoint is needed, unless --references")
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # which vocoder auto chose
    try:
        model, state = None, {"hparams": HParams().to_dict()} if args.references else None
        if args.checkpoint:
            checkpoint = (registered_checkpoint(args.checkpoint, args.tracking_uri)
                          if args.checkpoint.startswith("models:/") else Path(args.checkpoint))
            state = load_checkpoint(checkpoint)
        if args.vocoder:  # before the hparams are validated: the saved one may be gone
            state["hparams"]["vocoder"] = args.vocoder
        if args.references:
            hp = HParams.from_dict(state["hparams"])
        else:
            model, hp = model_from_state(state)
        vocoder = load_vocoder(hp.vocoder, hp)
        held_out = (args.held_out / "heldout.csv").is_file()
        sentences = (corpus_sentences(args.held_out) if held_out
                     else validation_sentences(args.held_out, hp, args.sentences))
        texts = [s.text for s in sentences] + [u.text for u in read_utterances(args.held_out)]
        recognizer = open_recognizer(
            None if args.recognizer == "off" else
            bundled_model() if args.recognizer == ENGLISH else Path(args.recognizer),
            vocabulary(texts))
    except (CheckpointError, HParamsError, VocoderError, RecognizerError, DataError,
            OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    what = "copy synthesis of the recordings" if args.references else args.checkpoint
    judged_on = ("held-out and hard sentences" if held_out else
                 f"validation utterances {', '.join(s.clip_id for s in sentences)}")
    if not held_out:
        print(f"{args.held_out} has no heldout.csv: judging {judged_on}")
    print(f"{what}, through {vocoder.name}:")
    costs, judged = Costs(), []
    for sentence in sentences:
        # The prenet's dropout draws anew for each sentence: what a sentence scores depends
        # neither on the sentences before it nor on what loading the vocoder drew.
        torch.manual_seed(args.seed)
        try:
            judged.append(judge(sentence, hp, vocoder, model, recognizer, costs))
        except NonFiniteAudio as exc:  # a diverged model
            print(f"error: {sentence.text!r}: {exc}", file=sys.stderr)
            return 1
        print(describe(sentence, judged[-1]))
    measures = summary_measures(sentences, judged) | {"vocoder": vocoder.name,
                                                        "judged_on": judged_on,
                                                        "time": time.time()}
    print(summary(measures))
    print(costs.line(len(judged)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(measures, indent=1))
        emit("artifact", kind="listening", path=str(args.json),
             epoch=state.get("epoch"), step=state.get("step"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
