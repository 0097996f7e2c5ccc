"""Mel-cepstral distortion with DTW on constructed inputs: a reference against itself, a
time-stretched copy, silence and speech played backwards."""

from __future__ import annotations

import math

import pytest
import torch

from train.corpus import Espeak, trim_silence
from train.tacotron2.audio import LOG_FLOOR, MelSpectrogram
from train.tacotron2.hparams import HParams
from train.tacotron2.mcd import mel_cepstral_distortion

HP = HParams()


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    with Espeak() as speaker:
        samples = trim_silence(speaker.synthesize("the third chair was noisy"))
    return MelSpectrogram(HP)(torch.from_numpy(samples / 32768).float())


def test_a_reference_against_itself_scores_zero(reference):
    assert mel_cepstral_distortion(reference, reference) == 0.0


def test_dtw_forgives_a_slower_copy_but_not_silence_or_speech_backwards(reference):
    stretched = mel_cepstral_distortion(reference.repeat_interleave(2, dim=1), reference)
    silence = mel_cepstral_distortion(torch.full_like(reference, math.log(LOG_FLOOR)), reference)
    backwards = mel_cepstral_distortion(reference.flip(-1), reference)
    assert stretched < 1.0  # each frame twice: DTW pairs every copy with its original
    assert silence > 20 * max(stretched, 1.0) and backwards > 20 * max(stretched, 1.0)
