"""Does restricting the recogniser to the corpus's words sharpen it? (see
train.tacotron2.intelligibility)

    .venv/bin/python bench/recognizer_vocabulary.py [--corpus .state/demo_corpus] [--clips 20]

Decodes the first ``--clips`` recordings of the corpus and its held-out ones, as they are
and through Griffin-Lim (copy synthesis of their mels), with pocketsphinx's bundled
US-English model: once with its full dictionary, once with the dictionary restricted to
the words of the corpus's texts. Prints the CER and the CPU seconds of each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.evaluate import corpus_sentences  # noqa: E402
from train.tacotron2.audio import MelSpectrogram, load_wav  # noqa: E402
from train.tacotron2.hparams import HParams  # noqa: E402
from train.tacotron2.intelligibility import (  # noqa: E402
    Recognizer,
    bundled_model,
    character_error_rate,
    vocabulary,
)
from train.tacotron2.vocoder import load_vocoder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / ".state" / "demo_corpus")
    parser.add_argument("--clips", type=int, default=20)
    args = parser.parse_args()
    hp = HParams()
    rows = [line.split("|") for line in
            (args.corpus / "metadata.csv").read_text(encoding="utf-8").splitlines() if line]
    held_out = [s for s in corpus_sentences(args.corpus) if s.clip_id.startswith("HELD-")]
    clips = [(text, args.corpus / "wavs" / f"{clip_id}.wav")
             for clip_id, text, _ in rows[:args.clips]] + [(s.text, s.recording) for s in held_out]
    texts = [text for _, text, _ in rows] + [s.text for s in corpus_sentences(args.corpus)]
    recordings = [load_wav(path, hp.sampling_rate) for _, path in clips]
    vocoder, features = load_vocoder("griffin_lim", hp), MelSpectrogram(hp)
    copies = [vocoder(features(torch.from_numpy(wav))) for wav in recordings]
    seconds = sum(len(wav) for wav in recordings) / hp.sampling_rate
    print(f"{len(clips)} clips, {seconds:.0f} s of audio")
    for name, words in (("full dictionary", None), ("corpus words", vocabulary(texts))):
        recognizer = Recognizer(bundled_model(), words)
        for kind, waves in (("recordings", recordings), ("Griffin-Lim copies", copies)):
            started = time.process_time()
            heard = [recognizer(wav, hp.sampling_rate) for wav in waves]
            cpu = time.process_time() - started
            cer = character_error_rate([text for text, _ in clips], heard)
            print(f"{name:16} {kind:19} CER {cer:.3f}  {cpu:.1f} CPU s")


if __name__ == "__main__":
    main()
