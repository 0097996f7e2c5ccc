"""Checkpoints: written atomically, read back with errors that name the file.

A checkpoint holds everything needed to continue a run exactly: model,
optimizer and scheduler states, the step/epoch position, the best validation
loss so far, the hyperparameters, and the random-number-generator states.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.tacotron2.atomic import atomic_path

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated or not one of ours; names the file."""


REQUIRED_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "hparams")


def previous_path(path: Path) -> Path:
    """Where ``save_checkpoint(path, keep_previous=True)`` keeps the checkpoint it replaced."""
    return path.with_suffix(".prev.pt")


def save_checkpoint(path: Path, state: dict[str, Any], keep_previous: bool = False) -> Path:
    """Write ``state`` to ``path`` so that a crash mid-write never leaves a torn file.

    With ``keep_previous`` the file it replaces is kept as :func:`previous_path`, a
    fallback for a resume should ``path`` itself be damaged later (a full disk, a copy
    cut short).
    """
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename: a power cut keeps one of two
        except (OSError, RuntimeError) as error:
            # torch reports a failed write as a RuntimeError of its C++ writer, naming no file.
            # Said here, while the partial file still takes its space.
            raise CheckpointError(f"{path}: cannot write the checkpoint: "
                                  f"{_why(error, path)}") from error
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
    return path


def _why(error: BaseException, path: Path) -> str:
    """Why writing ``path`` failed, in words: above all, a full disk."""
    errors = (error, error.__cause__, error.__context__)
    if any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in errors) or (
            shutil.disk_usage(path.parent).free == 0):
        return f"the disk is full ({path.parent} has no space left)"
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        # Our checkpoints hold numpy/python RNG states, which the safe loader refuses.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from exc
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(
            f"{path}: not a Smart Tuner checkpoint (missing {', '.join(missing)})")
    return state


def rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def load_resumable(path: Path, map_location: str | torch.device = "cpu"
                   ) -> tuple[dict[str, Any], Path]:
    """The checkpoint to resume from: ``path``, or its previous one if ``path`` is damaged.

    Returns the state and the file it came from. When neither is usable, the error
    names ``path``: a run is never silently restarted from scratch.
    """
    try:
        return load_checkpoint(path, map_location), path
    except CheckpointError as damaged:
        previous = previous_path(path)
        if not previous.is_file():
            raise
        try:
            state = load_checkpoint(previous, map_location)
        except CheckpointError as also_damaged:
            raise CheckpointError(f"{damaged}; the previous one too: {also_damaged}") from None
        log.warning("%s; resuming from the previous checkpoint %s", damaged, previous)
        return state, previous
