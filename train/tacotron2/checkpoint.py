"""Checkpoints: written atomically, read back with errors that name the file.

A checkpoint holds everything needed to continue a run exactly: model,
optimizer and scheduler states, the step/epoch position, the best validation
loss so far, the hyperparameters, and the random-number-generator states.

Every checkpoint is read by :func:`read_checkpoint_file`, torch's weights-only loader: it
rebuilds tensors and plain Python data (dicts, lists, tuples, numbers, strings, None) and,
of everything else, only the few types in :data:`SAFE_GLOBALS`. A crafted file whose
pickle would call a function (``os.system``, ``eval``, ...) is refused before anything of
it runs, naming the file.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import random
import re
import shutil
import warnings
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


# The types beyond tensors and plain data that the weights-only loader may rebuild: the
# numpy random state of rng_states(), a uint32 array (numpy 1.x pickled its rebuilding
# function under numpy.core; a dtype's state is set on its class, UInt32DType).
# NVIDIA/tacotron2's checkpoints (state_dict, optimizer, learning_rate, iteration) need
# nothing beyond the defaults (OrderedDict included).
_reconstruct = np._core.multiarray._reconstruct
SAFE_GLOBALS: list[Any] = [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"),
                           np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def read_checkpoint_file(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """What ``path`` holds, read without running any code from it (see the module's doc).

    Raises :class:`CheckpointError`, one line naming the file, for a file that is
    unreadable, damaged, or holds anything but tensors, plain data and
    :data:`SAFE_GLOBALS`.
    """
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            # A plain pickle (no torch.save zip) makes torch warn of its protocol, in 2 lines.
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint: {_refusal(exc)}") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({_first_line(exc)})") from exc


def _refusal(error: pickle.UnpicklingError) -> str:
    """Why the weights-only loader refused a file, in one line (torch's says it in ten)."""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"refused, it holds {found.group(1)}, not weights or plain data (loading it "
                f"could run code; only load checkpoints of known origin)")
    lines = [line.strip() for line in text.splitlines()[1:]
             if line.strip() and not line.startswith(("Check the documentation", "Please file"))]
    return f"refused by the weights-only loader ({' '.join(lines) or _first_line(error)})"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    state = read_checkpoint_file(path, map_location)
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
