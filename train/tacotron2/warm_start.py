"""Warm start, as NVIDIA's ``train.py --warm_start``: a model's weights from a checkpoint.

Only the weights are taken: the optimiser, the schedule and the step start afresh. Two
formats are read:

- this project's checkpoints (:mod:`train.tacotron2.checkpoint`, the weights under ``"model"``);
- NVIDIA/tacotron2's (the weights under ``"state_dict"``, in the parameter names of its
  ``model.py``), renamed one to one by :data:`NVIDIA_NAMES`.

Layers named in ``ignore_layers`` keep the model's fresh initialisation, as NVIDIA's
``ignore_layers`` hyperparameter (``embedding.weight`` by default there): the way to
start from a model whose symbol table differs.

Either is read with torch's weights-only loader
(:func:`train.tacotron2.checkpoint.read_checkpoint_file`): a file that would run code when
unpickled is refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

from torch import Tensor, nn

from train.tacotron2.checkpoint import CheckpointError, read_checkpoint_file

log = logging.getLogger(__name__)

# (NVIDIA's name prefix, this project's); "{n}" is a layer index. NVIDIA wraps each
# nn.Conv1d and nn.Linear in a module (``.conv``, ``.linear_layer``) where this project
# subclasses them; every other name (embedding, LSTMs, batch norms) is the same in both.
NVIDIA_NAMES: tuple[tuple[str, str], ...] = (
    ("encoder.convolutions.{n}.0.conv.", "encoder.convolutions.{n}.0."),
    ("decoder.prenet.layers.{n}.linear_layer.", "decoder.prenet.layers.{n}."),
    ("decoder.attention_layer.query_layer.linear_layer.", "decoder.attention.query_layer."),
    ("decoder.attention_layer.memory_layer.linear_layer.", "decoder.attention.memory_layer."),
    ("decoder.attention_layer.v.linear_layer.", "decoder.attention.v."),
    ("decoder.attention_layer.location_layer.location_conv.conv.",
     "decoder.attention.location_layer.conv."),
    ("decoder.attention_layer.location_layer.location_dense.linear_layer.",
     "decoder.attention.location_layer.dense."),
    ("decoder.linear_projection.linear_layer.", "decoder.frame_projection."),
    ("decoder.gate_layer.linear_layer.", "decoder.gate_layer."),
    ("postnet.convolutions.{n}.0.conv.", "postnet.convolutions.{n}.0."),
)


def _prefix_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(prefix).replace(re.escape("{n}"), r"(?P<n>\d+)"))


_TO_PROJECT = [(_prefix_pattern(nvidia), project) for nvidia, project in NVIDIA_NAMES]
_TO_NVIDIA = [(_prefix_pattern(project), nvidia) for nvidia, project in NVIDIA_NAMES]


def _rename(name: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, prefix in rules:
        match = pattern.match(name)
        if match:
            return prefix.format(**match.groupdict()) + name[match.end():]
    return name


def project_name(nvidia_name: str) -> str:
    """This model's name of NVIDIA's parameter ``nvidia_name`` (a project name is kept)."""
    return _rename(nvidia_name, _TO_PROJECT)


def nvidia_name(project_name: str) -> str:
    """NVIDIA's name of this model's parameter ``project_name``."""
    return _rename(project_name, _TO_NVIDIA)


def read_weights(path: Path) -> dict[str, Tensor]:
    """The weights stored in ``path``, in this project's names, from either format."""
    if not path.is_file():
        raise CheckpointError(f"{path}: warm-start checkpoint not found")
    state = read_checkpoint_file(path)  # weights and plain data only: no code from the file
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        return dict(state["model"])
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        return {project_name(name): value for name, value in state["state_dict"].items()}
    raise CheckpointError(f"{path}: neither a Smart Tuner checkpoint (\"model\") nor an "
                          f"NVIDIA one (\"state_dict\")")


def warm_start_model(model: nn.Module, path: Path, ignore_layers: Iterable[str] = ()) -> list[str]:
    """Load the weights of ``path`` into ``model``, except ``ignore_layers``.

    ``ignore_layers`` are parameter names in this project's or NVIDIA's spelling. Every
    other parameter of the model must be in the checkpoint with the same shape, and the
    checkpoint must hold nothing else; otherwise :class:`CheckpointError` names the
    parameters (and both shapes). Returns the names loaded.
    """
    weights = read_weights(path)
    own = model.state_dict()
    ignored = {project_name(name) for name in ignore_layers}
    problems = [f"--ignore-layers {name}: the model has no such parameter"
                for name in sorted(ignored - own.keys())]
    problems += [f"{name}: in the checkpoint, not in the model"
                 for name in sorted(weights.keys() - own.keys() - ignored)]
    # Checkpoints older than PyTorch 0.4.1 lack the batch norms' step counters, which are
    # no weights: those keep the model's own.
    problems += [f"{name}: in the model, not in the checkpoint"
                 for name in sorted(own.keys() - weights.keys() - ignored)
                 if not name.endswith(".num_batches_tracked")]
    loaded = sorted((own.keys() & weights.keys()) - ignored)
    problems += [f"{name}: checkpoint {tuple(weights[name].shape)}, model "
                 f"{tuple(own[name].shape)} (different sizes; ignore the layer or match them)"
                 for name in loaded if weights[name].shape != own[name].shape]
    if problems:
        raise CheckpointError(f"{path}: cannot warm-start from it:\n  " + "\n  ".join(problems))
    model.load_state_dict({**own, **{name: weights[name] for name in loaded}})
    log.info("warm-started from %s: %d tensors loaded, %d kept fresh (%s)", path, len(loaded),
             len(ignored), ", ".join(sorted(ignored)) or "none ignored")
    return loaded
