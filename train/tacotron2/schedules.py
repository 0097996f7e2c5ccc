"""Learning-rate scheduling during training (the seed's ParamScheduler).

A schedule is a *shape*: a function of the optimizer step that multiplies
``learning_rate``. Shapes decay from 1 to ``lr_min_ratio`` over ``lr_decay_steps``
(0 = the whole run) after an optional linear warm-up of ``warmup_steps``.
To add a schedule, add one function to :data:`SCHEDULES`; ``lr_schedule=<name>``
then selects it and hparam validation accepts it. The shapes import no torch, so
validating hparams (and reading a config) stays light; torch loads when a
:class:`LearningRateScheduler` is built.

The shape drives :class:`torch.optim.lr_scheduler.LambdaLR` (stepped every
optimizer step). Plateau adaptation (``plateau_patience`` > 0) is torch's
:class:`~torch.optim.lr_scheduler.ReduceLROnPlateau`, stepped on the validation
loss; each cut it makes is folded into the shape's base learning rate so that the
two compose instead of the shape overwriting the cut on its next step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from train.tacotron2.hparams import HParams

# progress: 0 at the end of warm-up, 1 at the end of the decay horizon.
Shape = Callable[[float, float], float]  # (progress, min_ratio) -> multiplier


def _constant(progress: float, min_ratio: float) -> float:
    return 1.0


def _linear(progress: float, min_ratio: float) -> float:
    return 1.0 - (1.0 - min_ratio) * progress


def _exponential(progress: float, min_ratio: float) -> float:
    return max(min_ratio, 1e-12) ** progress


def _cosine(progress: float, min_ratio: float) -> float:
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _noam(progress: float, min_ratio: float) -> float:
    # Transformer-style inverse square root, expressed on the decay horizon so that
    # it starts at 1 after warm-up and reaches min_ratio at the horizon.
    return 1.0 / math.sqrt(1.0 + progress * (1.0 / max(min_ratio, 1e-6) ** 2 - 1.0))


SCHEDULES: dict[str, Shape] = {
    "constant": _constant,
    "linear": _linear,
    "exponential": _exponential,
    "cosine": _cosine,
    "noam": _noam,
}


def lr_multiplier(hp: HParams, step: int, total_steps: int) -> float:
    """The factor on ``hp.learning_rate`` before optimizer step ``step`` (0-based)."""
    if step < hp.warmup_steps:
        return (step + 1) / (hp.warmup_steps + 1)
    horizon = hp.lr_decay_steps or max(total_steps - hp.warmup_steps, 1)
    progress = min((step - hp.warmup_steps) / horizon, 1.0)
    return SCHEDULES[hp.lr_schedule](progress, hp.lr_min_ratio)


class LearningRateScheduler:
    """Warm-up + decay shape per step, plus optional cuts on validation plateaus."""

    def __init__(self, optimizer: torch.optim.Optimizer, hp: HParams, total_steps: int):
        from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau  # see the docstring

        self.optimizer = optimizer
        self.shape = LambdaLR(optimizer, lambda step: lr_multiplier(hp, step, total_steps))
        self.plateau = (
            ReduceLROnPlateau(optimizer, mode="min", factor=hp.plateau_factor,
                              patience=hp.plateau_patience - 1)
            if hp.plateau_patience > 0 else None
        )

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self) -> None:
        """Advance one optimizer step."""
        self.shape.step()

    def on_validation(self, val_loss: float) -> None:
        """Let the plateau rule see a validation loss and cut the lr if it stalled."""
        if self.plateau is None:
            return
        before = [group["lr"] for group in self.optimizer.param_groups]
        self.plateau.step(val_loss)
        for i, group in enumerate(self.optimizer.param_groups):
            self.shape.base_lrs[i] *= group["lr"] / before[i]

    def state_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape.state_dict(),
            "plateau": self.plateau.state_dict() if self.plateau else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shape.load_state_dict(state["shape"])
        if self.plateau is not None and state.get("plateau"):
            self.plateau.load_state_dict(state["plateau"])
