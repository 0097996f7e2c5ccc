"""Mel-cepstral distortion (MCD) with dynamic time warping: how far a free-running mel
spectrogram is from the reference recording's, in dB, whatever their lengths.

Both log-mels (this project's features, natural log of magnitudes; see
:mod:`train.tacotron2.audio`) become MFCC-style cepstra by a DCT (librosa's, type II,
orthonormal); c0, the loudness, is left out, as usual, and the next :data:`N_CEPSTRA`
kept. DTW (``librosa.sequence.dtw``, Euclidean frame distance) pairs the frames, and the
MCD is the mean distance along the path times ``10 √2 / ln 10``, the standard constant
(Kubichek 1993) that turns a natural-log cepstral distance into dB. A mel against itself
scores 0; silence, or speech played backwards, scores high.
"""

from __future__ import annotations

import math

import librosa
import numpy as np
import torch

N_CEPSTRA = 12  # c1..c12: the first 13 MFCCs without c0
MCD_CONSTANT = 10 * math.sqrt(2) / math.log(10)


def cepstra(log_mel: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N_CEPSTRA, frames) cepstra c1.. of a log-mel (n_mels, frames)."""
    if isinstance(log_mel, torch.Tensor):
        log_mel = log_mel.detach().float().cpu().numpy()
    coefficients = librosa.feature.mfcc(S=np.asarray(log_mel, dtype=np.float64),
                                        n_mfcc=N_CEPSTRA + 1, dct_type=2, norm="ortho")
    return coefficients[1:]


def mel_cepstral_distortion(log_mel: np.ndarray | torch.Tensor,
                            reference: np.ndarray | torch.Tensor) -> float:
    """MCD (dB) of ``log_mel`` against ``reference``, both (n_mels, frames), aligned by DTW."""
    ours, theirs = cepstra(log_mel), cepstra(reference)
    _, path = librosa.sequence.dtw(X=ours, Y=theirs, metric="euclidean")
    distances = np.linalg.norm(ours[:, path[:, 0]] - theirs[:, path[:, 1]], axis=0)
    return float(MCD_CONSTANT * distances.mean())
