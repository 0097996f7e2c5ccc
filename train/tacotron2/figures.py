"""Figures for people: attention alignments and mel spectrograms, as PNG files.

Only numpy and matplotlib's object API, no torch: the tuner and the bot import
:func:`draw_alignment` to re-render a trainer's saved alignment matrix without
loading torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from train.tacotron2.atomic import atomic_path


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def draw_alignment(ax: Axes, alignment: np.ndarray) -> None:
    """Attention weights (decoder steps × text tokens) on ``ax``, steps on x, tokens on y."""
    image = ax.imshow(alignment.T, aspect="auto", origin="lower", interpolation="none")
    ax.figure.colorbar(image, ax=ax, label="attention weight")
    ax.set_xlabel("decoder step")
    ax.set_ylabel("text token")


def plot_alignment(alignment: np.ndarray, path: Path, title: str = "") -> Path:
    """Attention weights, decoder steps on x and text tokens on y (as in the paper)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    draw_alignment(ax, alignment)
    ax.set_title(title)
    return _save(fig, path)


def save_alignment_matrix(alignment: np.ndarray, path: Path) -> Path:
    """The raw weights as ``.npy``, so reports can redraw them; written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as file:  # numpy adds no ".npy" to a file
        np.save(file, alignment)
    return path


def plot_mels(target: np.ndarray, predicted: np.ndarray, path: Path, title: str = "") -> Path:
    """Target and predicted log-mel spectrograms (:func:`mels_figure`) as a PNG file."""
    return _save(mels_figure(target, predicted, title), path)


def mels_figure(target: np.ndarray, predicted: np.ndarray, title: str = "") -> Figure:
    """Target and predicted log-mel spectrograms, one above the other, on the target's
    colour scale (a prediction outside it shows as the scale's ends), with a colour bar.

    ``title`` should name the run and the utterance, e.g. ``"trial_0003, LJ001-0007:
    epoch 8, step 40"``.
    """
    fig = Figure(figsize=(8, 5), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    low, high = float(np.min(target)), float(np.max(target))
    for ax, mel, name in zip(axes, (target, predicted), ("target", "predicted"), strict=True):
        image = ax.imshow(mel, aspect="auto", origin="lower", interpolation="none",
                          vmin=low, vmax=high)
        ax.set_ylabel(f"{name}\nmel channel")
    axes[-1].set_xlabel("frame")
    below, above = np.min(predicted) < low, np.max(predicted) > high
    extend = ("both" if above else "min") if below else ("max" if above else "neither")
    fig.colorbar(image, ax=axes, label="log magnitude", extend=extend)
    fig.suptitle(title)
    return fig
