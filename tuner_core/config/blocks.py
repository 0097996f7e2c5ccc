"""The base of the config's blocks: unknown keys are errors that suggest the closest one."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ModelWrapValidatorHandler, model_validator

from tuner_core.config.problems import validate_known_keys


def null_as_empty(value: Any) -> Any:
    # A YAML block whose entries are all commented out reads as null.
    return {} if value is None else value


class Section(BaseModel):
    """A block of the config: unknown keys are errors that suggest the closest valid key."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _known_keys_only(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        return validate_known_keys(null_as_empty(data), cls.model_fields, handler)
