"""Artifacts for people: a spoken sample (WAV); the plots are in :mod:`train.figures`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from train.audio import griffin_lim, save_wav
from train.hparams import HParams
from train.model import Tacotron2
from train.text import text_to_sequence


@torch.no_grad()
def synthesize(model: Tacotron2, hp: HParams, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Speak ``text``: (waveform, alignment) from the model's own predictions."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([text_to_sequence(text, hp.symbol_set)], dtype=torch.long, device=device)
    _, mel_postnet, _, alignments = model.infer(ids)
    model.train(was_training)
    wav = griffin_lim(mel_postnet[0].float().cpu().numpy(), hp, n_iter=hp.griffin_lim_iters)
    return wav, alignments[0].float().cpu().numpy()


def write_audio_sample(model: Tacotron2, hp: HParams, path: Path, text: str | None = None) -> Path:
    wav, _ = synthesize(model, hp, text or hp.test_sentence)
    save_wav(path, wav, hp.sampling_rate)
    return path
