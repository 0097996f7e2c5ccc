"""The config's problems, each as one ``key.path: what is wrong`` line.

Pydantic's own errors are reworded here (:func:`problem_line`), and the config's own
checks raise theirs through :func:`custom_errors`, so that both read alike.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from train.tacotron2.hparams import unknown_key_message

Loc = tuple[str | int, ...]
Model = TypeVar("Model", bound=BaseModel)


def custom_errors(problems: list[tuple[Loc, str]]) -> ValidationError:
    """A ValidationError carrying our own messages at their key paths.

    Raised inside a validator, pydantic merges it into the error being built, with each
    path prefixed by the validator's own position, as it does for a nested model.
    """
    return ValidationError.from_exception_data("Config", [
        {"type": PydanticCustomError("config", "{problem}", {"problem": message}),
         "loc": loc, "input": None}
        for loc, message in problems])


def unknown_key(key: str, valid: Collection[str]) -> str:
    """``"unknown key; did you mean <closest>?"``; the caller puts ``key`` in the path."""
    return unknown_key_message(key, list(valid)).removeprefix(f"{key}: ")


def unknown_keys(data: Mapping[Any, Any], valid: Collection[str]) -> list[tuple[Loc, str]]:
    return [((str(key),), unknown_key(str(key), valid)) for key in data if key not in valid]


def validate_known_keys(data: Any, valid: Collection[str], validate: Callable[[Any], Model],
                         ) -> Model:
    """``validate(data)``, reporting the unknown keys of ``data`` along with its other errors."""
    if not isinstance(data, Mapping) or not (problems := unknown_keys(data, valid)):
        return validate(data)
    try:
        validate({key: value for key, value in data.items() if key in valid})
    except ValidationError as error:
        problems += [(detail["loc"], error_message(detail)) for detail in error.errors()]
    raise custom_errors(problems)



_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "path_type": "a path", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping",
}
_COMPARISONS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
                "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}


def problem_line(error: ErrorDetails) -> str:
    """One pydantic error as ``key.path: what is wrong``."""
    path = dotted(error["loc"])
    return f"{path}: {error_message(error)}" if path else error_message(error)


def error_message(error: ErrorDetails) -> str:
    """What is wrong, in words, without the key path."""
    kind, context, given = error["type"], error.get("ctx", {}), error.get("input")
    if kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, got {given!r}"
    elif kind == "missing":
        message = "required, but missing"
    elif kind in ("literal_error", "enum"):
        message = f"expected {context['expected']}, got {given!r}"
    elif kind in _COMPARISONS:
        bound, operator = _COMPARISONS[kind]
        message = f"must be {operator} {context[bound]:g}, got {given!r}"
    elif kind == "value_error":
        message = str(context["error"])
    else:  # our own problems, and rarer pydantic errors, which read well as they are
        message = error["msg"]
    return message


def dotted(loc: Loc) -> str:
    return ".".join(str(part) for part in loc)
