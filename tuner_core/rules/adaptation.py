"""Automatic correction of a trial that overfits (the seed's "restarts").

When the early-stop controller asks to *adapt*, the runner ends the trainer,
changes the regularisation/optimiser hyperparameters below, and restarts it from
the trial's best checkpoint. Each call returns only what it changed, as
``{name: (old, new)}``, so the change can be recorded and reported.
"""

from __future__ import annotations

from typing import Any

DROPOUTS = ("p_attention_dropout", "p_decoder_dropout")
MAX_DROPOUT = 0.5  # more than this and Tacotron2's decoder stops learning to attend
MIN_WEIGHT_DECAY = 1e-7  # multiplying zero weight decay would change nothing


def adapt_hparams(hparams: dict[str, Any], learning_rate_factor: float,
                  dropout_increase: float, weight_decay_factor: float
                  ) -> dict[str, tuple[Any, Any]]:
    """The corrected values for an overfitting trial, as ``{name: (old, new)}``."""
    changes: dict[str, tuple[Any, Any]] = {}
    lr = hparams["learning_rate"]
    changes["learning_rate"] = (lr, lr * learning_rate_factor)
    for name in DROPOUTS:
        old = hparams[name]
        new = min(MAX_DROPOUT, round(old + dropout_increase, 4))
        if new != old:
            changes[name] = (old, new)
    decay = hparams["weight_decay"]
    changes["weight_decay"] = (decay, max(decay, MIN_WEIGHT_DECAY) * weight_decay_factor)
    return {name: change for name, change in changes.items() if change[0] != change[1]}
