"""The recogniser on constructed speech: a recording scores its own ceiling, silence and
speech played backwards score high; texts are compared after the project's normaliser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from train.corpus import HARD_SENTENCES, SAMPLE_RATE, Espeak, generate_sentences, trim_silence
from train.tacotron2.intelligibility import (
    Intelligibility,
    RecognizerError,
    bundled_model,
    character_error_rate,
    open_recognizer,
    transcript,
    vocabulary,
)
from train.tacotron2.text import normalize

TEXTS = ["The 3rd chair was noisy.", "The old candle was built in 1867."]


@pytest.fixture(scope="module")
def recording() -> np.ndarray:
    with Espeak() as speaker:
        return trim_silence(speaker.synthesize(normalize(TEXTS[0]))) / 32768


@pytest.fixture(scope="module")
def recognizer():
    return open_recognizer(bundled_model(), vocabulary(TEXTS))


def test_texts_are_compared_as_normalised_words():
    assert transcript('Dr. Lee paid $5.20, "twice"!') == \
        "doctor lee paid five dollars twenty cents twice"
    assert vocabulary(TEXTS) >= {"third", "eighteen", "sixty", "seven"}


def test_a_recording_scores_the_ceiling_and_silence_or_backwards_speech_scores_high(
        recording, recognizer):
    heard = recognizer(recording, SAMPLE_RATE)
    ceiling = character_error_rate(TEXTS[:1], [heard])
    assert ceiling < 0.5  # espeak-ng's voice is recognisable
    assert Intelligibility(ceiling, ceiling).ratio == 1.0
    silent = character_error_rate(TEXTS[:1], [recognizer(np.zeros(SAMPLE_RATE), SAMPLE_RATE)])
    backwards = character_error_rate(TEXTS[:1], [recognizer(recording[::-1].copy(),
                                                            SAMPLE_RATE)])
    assert silent >= 0.8 and backwards >= 0.6
    assert Intelligibility(backwards, ceiling).ratio > 1.5


def test_a_transcript_does_not_depend_on_what_was_heard_before():
    # The demo corpus's words, and a list, which pocketsphinx's feature state (its cepstral
    # mean, carried over between utterances) used to hear differently the second time.
    recognizer = open_recognizer(bundled_model(), vocabulary([*generate_sentences(103),
                                                              *HARD_SENTENCES]))
    with Espeak() as speaker:
        listing = trim_silence(speaker.synthesize(normalize(HARD_SENTENCES[4]))) / 32768
    assert recognizer(listing, SAMPLE_RATE) == recognizer(listing, SAMPLE_RATE)


def test_off_is_none_and_a_bad_model_folder_is_named(tmp_path: Path):
    assert open_recognizer(None) is None
    with pytest.raises(RecognizerError, match=f"{tmp_path}: a pocketsphinx model folder needs"):
        open_recognizer(tmp_path)
