"""Artifacts for people: alignment and mel plots (PNG) and a spoken sample (WAV)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import numpy as np
import torch
from matplotlib.figure import Figure

from train.audio import griffin_lim, save_wav
from train.hparams import HParams
from train.model import Tacotron2
from train.text import text_to_sequence


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    tmp.replace(path)
    return path


def plot_alignment(alignment: np.ndarray, path: Path, title: str = "") -> Path:
    """Attention weights, decoder steps on x and text tokens on y (as in the paper)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    image = ax.imshow(alignment.T, aspect="auto", origin="lower", interpolation="none")
    fig.colorbar(image, ax=ax)
    ax.set_xlabel("decoder step")
    ax.set_ylabel("text token")
    ax.set_title(title)
    return _save(fig, path)


def plot_mels(target: np.ndarray, predicted: np.ndarray, path: Path, title: str = "") -> Path:
    """Target and predicted log-mel spectrograms, one above the other."""
    fig = Figure(figsize=(8, 5))
    for row, (mel, name) in enumerate(((target, "target"), (predicted, "predicted")), start=1):
        ax = fig.add_subplot(2, 1, row)
        ax.imshow(mel, aspect="auto", origin="lower", interpolation="none")
        ax.set_ylabel(f"{name}\nmel channel")
    ax.set_xlabel("frame")
    fig.suptitle(title)
    return _save(fig, path)


@torch.no_grad()
def synthesize(model: Tacotron2, hp: HParams, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Speak ``text``: (waveform, alignment) from the model's own predictions."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([text_to_sequence(text)], dtype=torch.long, device=device)
    _, mel_postnet, _, alignments = model.infer(ids)
    model.train(was_training)
    wav = griffin_lim(mel_postnet[0].float().cpu().numpy(), hp, n_iter=hp.griffin_lim_iters)
    return wav, alignments[0].float().cpu().numpy()


def write_audio_sample(model: Tacotron2, hp: HParams, path: Path, text: str | None = None) -> Path:
    wav, _ = synthesize(model, hp, text or hp.test_sentence)
    save_wav(path, wav, hp.sampling_rate)
    return path
