"""The hyperparameter search space: its entry types, sampling them, and describing them.

Each entry of ``hyperparameter_search_space`` in the YAML config is one of
:class:`FloatRange`, :class:`IntRange` or :class:`Categorical`, chosen by its ``type``
(see :data:`SEARCH_RANGE_TYPES`). Whether a name is a trainer hyperparameter and whether
its bounds are valid values of it is checked by :mod:`tuner_core.config`, which knows the
trainer's fixed settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

import optuna
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Choice = bool | int | float | str  # what Optuna can store for a categorical parameter


class _Range(BaseModel):
    """Common checks of the numeric ranges."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    min: float
    max: float
    log: bool = False

    @model_validator(mode="after")
    def _check_bounds(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        if self.log and self.min <= 0:
            raise ValueError(f"a log scale needs min > 0, got {self.min:g}")
        return self


class FloatRange(_Range):
    """A real number in ``[min, max]``, on a log scale or in steps of ``step``."""

    type: Literal["float"] = "float"
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check_step(self) -> Self:
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log: true")  # Optuna refuses it
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.min, self.max, log=self.log, step=self.step)

    def describe(self) -> str:
        scale = " (log)" if self.log else f" (step {_number(self.step)})" if self.step else ""
        return f"{_number(self.min)} … {_number(self.max)}{scale}"


class IntRange(_Range):
    """An integer in ``[min, max]``, in steps of ``step`` or on a log scale."""

    type: Literal["int"] = "int"
    min: int
    max: int
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check_step(self) -> Self:
        if self.log and self.step != 1:
            raise ValueError("step must be 1 with log: true")  # Optuna refuses other steps
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.min, self.max, step=self.step, log=self.log)

    def describe(self) -> str:
        scale = " (log)" if self.log else f" (step {self.step})" if self.step != 1 else ""
        return f"{self.min} … {self.max}{scale}"


class Categorical(BaseModel):
    """One of a list of ``choices``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["categorical"] = "categorical"
    choices: list[Choice]

    @field_validator("choices")
    @classmethod
    def _not_empty(cls, choices: list[Choice]) -> list[Choice]:
        if not choices:
            raise ValueError("must list at least one choice")
        return choices

    def suggest(self, trial: optuna.Trial, name: str) -> Choice:
        return trial.suggest_categorical(name, self.choices)

    def describe(self) -> str:
        return " | ".join(_number(c) if isinstance(c, float) else str(c) for c in self.choices)


SearchRange = FloatRange | IntRange | Categorical

SEARCH_RANGE_TYPES: dict[str, type[BaseModel]] = {
    "float": FloatRange, "int": IntRange, "categorical": Categorical,
}


def suggest(trial: optuna.Trial, space: Mapping[str, SearchRange]) -> dict[str, Any]:
    """Ask ``trial`` for a value of every hyperparameter in ``space``."""
    return {name: entry.suggest(trial, name) for name, entry in space.items()}


def describe(space: Mapping[str, SearchRange]) -> list[str]:
    """One human line per hyperparameter, e.g. ``learning_rate: 0.0001 … 0.003 (log)``."""
    return [f"{name}: {entry.describe()}" for name, entry in space.items()]


def _number(value: float) -> str:
    # 3 significant digits, and 1e-07 written as 1e-7.
    return f"{value:.3g}".replace("e-0", "e-").replace("e+0", "e+")
