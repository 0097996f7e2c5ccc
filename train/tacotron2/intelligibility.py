"""Intelligibility: how much of a spoken sentence an offline recogniser understands, as
its character error rate (CER, with jiwer) against the sentence's text.

The recogniser is pocketsphinx (5.1), whose US-English model ships inside its package
(``pocketsphinx.get_model_path()``): nothing is downloaded. Speech is resampled to its
16 kHz with librosa. Texts and transcripts are compared as words: the text goes through
the project's normaliser (:func:`train.tacotron2.text.normalize`: numbers, money, years,
abbreviations), lower case, punctuation out.

A CER is only meaningful beside the recogniser's CER on the corpus's own recordings of
the same sentences (the ceiling: pocketsphinx is no listener, and the demo corpus is
espeak-ng's robotic voice), so :class:`Intelligibility` always carries both and their
ratio (1.0: as intelligible as the recordings).

**Vocabulary.** :class:`Recognizer` takes the words the evaluated texts can contain (the
corpus's own texts) and restricts the model's pronouncing dictionary to them, keeping the
bundled language model (pocketsphinx drops its words outside the dictionary). On the demo
corpus (``.state/demo_corpus``, espeak-ng), 20 of its own recordings plus the 3 held-out
ones (56 s of audio), ``bench/recognizer_vocabulary.py`` gives, as CER with the full
dictionary / with the corpus's words:

========================================  =========  ================
clips                                     full       corpus words
========================================  =========  ================
the recordings                            0.56       0.51
the recordings through Griffin-Lim        0.45       0.26
CPU seconds for the 56 s                  9-11       2.3-2.5
========================================  =========  ================

A trigram language model of the other 80 sentences (pocketsphinx's ``lm`` module, the
same dictionary) gave 0.46 and 0.27: no clear gain over the vocabulary alone, and a
language model that knows the sentences is quicker to "hear" them in a model's noise, so
the vocabulary it is. Silence decodes to at most one short word either way.

``model_dir`` picks the acoustic model: :func:`bundled_model` (US English), or another
language's pocketsphinx model folder (an acoustic-model subfolder holding ``mdef``, one
``*.lm.bin`` or ``*.lm`` language model, one ``*.dict``); :func:`open_recognizer` with
``None`` turns intelligibility off.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import jiwer
import librosa
import numpy as np

from train.tacotron2.text import normalize

SAMPLE_RATE = 16000  # pocketsphinx's acoustic models are trained on 16 kHz speech
ENGLISH = "en-us"  # the model folder bundled with pocketsphinx
_NOT_A_WORD = re.compile(r"[^\w']+|_")
_VARIANT = re.compile(r"\(\d+\)$")  # "read(2)": the dictionary's second pronunciation

log = logging.getLogger(__name__)


class RecognizerError(ValueError):
    """A recogniser model folder that cannot be used; the message names it."""


def transcript(text: str) -> str:
    """``text`` as the words a recogniser should hear: normalised, lower case, no punctuation."""
    return " ".join(_NOT_A_WORD.sub(" ", normalize(text).lower()).split())


def vocabulary(texts: Iterable[str]) -> set[str]:
    """The words of ``texts``, as :func:`transcript` spells them."""
    return {word for text in texts for word in transcript(text).split()}


def bundled_model() -> Path:
    """pocketsphinx's own US-English model folder."""
    import pocketsphinx  # a compiled extension: loaded only where speech is recognised

    return Path(pocketsphinx.get_model_path(ENGLISH))


def _one(folder: Path, candidates: list[Path], what: str) -> Path:
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise RecognizerError(f"{folder}: a pocketsphinx model folder needs one {what} "
                              f"(found {found})")
    return candidates[0]


class Recognizer:
    """pocketsphinx over one model folder: ``recognizer(wav, sampling_rate) -> words``."""

    def __init__(self, model_dir: Path, words: Iterable[str] | None = None) -> None:
        from pocketsphinx import Decoder

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise RecognizerError(f"{model_dir}: no such recogniser model folder")
        acoustic = _one(model_dir, [p for p in model_dir.iterdir() if (p / "mdef").is_file()],
                        "acoustic model (a folder holding mdef)")
        language = _one(model_dir, [p for p in model_dir.iterdir()
                                    if p.name.endswith((".lm.bin", ".lm"))
                                    and "-phone." not in p.name], "language model")
        dictionary = _one(model_dir, sorted(model_dir.glob("*.dict")), "dictionary (*.dict)")
        with tempfile.TemporaryDirectory() as scratch:
            if words is not None:
                dictionary = self._restricted(dictionary, set(words), Path(scratch))
            self._decoder = Decoder(hmm=str(acoustic), lm=str(language), dict=str(dictionary),
                                    loglevel="FATAL")

    @staticmethod
    def _restricted(dictionary: Path, words: set[str], scratch: Path) -> Path:
        lines = [line for line in dictionary.read_text(encoding="utf-8").splitlines(True)
                 if line.strip() and _VARIANT.sub("", line.split()[0]) in words]
        known = {_VARIANT.sub("", line.split()[0]) for line in lines}
        if missing := sorted(words - known):
            log.warning("%d words not in %s cannot be recognised: %s", len(missing),
                        dictionary.name, " ".join(missing[:20]))
        restricted = scratch / dictionary.name
        restricted.write_text("".join(lines), encoding="utf-8")
        return restricted

    def __call__(self, wav: np.ndarray, sampling_rate: int) -> str:
        """The words heard in ``wav`` (float in [-1, 1], mono), lower case."""
        speech = librosa.resample(np.asarray(wav, dtype=np.float32), orig_sr=sampling_rate,
                                  target_sr=SAMPLE_RATE)
        pcm = (np.clip(speech, -1.0, 1.0) * 32767).astype(np.int16)
        # pocketsphinx carries its feature state (the cepstral mean among it) over from one
        # utterance to the next, so a clip's transcript would depend on the clips before it.
        self._decoder.reinit_feat()
        self._decoder.start_utt()
        self._decoder.process_raw(pcm.tobytes(), full_utt=True)
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        return " ".join(_NOT_A_WORD.sub(" ", hypothesis.hypstr if hypothesis else "").split())


def open_recognizer(model_dir: Path | str | None, words: Iterable[str] | None = None
                    ) -> Recognizer | None:
    """A recogniser over ``model_dir`` (``None``: intelligibility is off, and so is this),
    its dictionary restricted to ``words`` when given."""
    return None if model_dir is None else Recognizer(Path(os.fspath(model_dir)), words)


def character_error_rate(texts: Sequence[str], heard: Sequence[str]) -> float:
    """The CER of the transcripts ``heard`` against ``texts``, over all their characters."""
    return float(jiwer.cer([transcript(t) for t in texts], list(heard)))


class Intelligibility(NamedTuple):
    cer: float  # the synthesized speech's
    reference_cer: float  # the corpus's own recordings' of the same sentences (the ceiling)

    @property
    def ratio(self) -> float:
        """CER against the ceiling's: 1.0 is as intelligible as the recordings."""
        if self.reference_cer == 0:
            return 1.0 if self.cer == 0 else float("inf")
        return self.cer / self.reference_cer

    def __str__(self) -> str:
        return f"CER {self.cer:.2f} (recordings {self.reference_cer:.2f}, ratio {self.ratio:.2f})"
