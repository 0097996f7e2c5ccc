"""Where a config's relative paths are taken from.

A path written in the config file (``${VAR}`` expansions included) is taken from the
file's folder, as Docker Compose takes a compose file's, so the same ``--config`` names
the same state folder from wherever it runs. A path given on the command line
(``--set``) or by the environment (``SMART_TUNER_STORAGE``, ``MLFLOW_TRACKING_URI``) is
taken from the working folder, as command-line tools take theirs.

The settings that hold paths are marked :class:`Relative` where the config's blocks
declare them (:mod:`tuner_core.config.sections`); validation resolves them against the
context's :data:`FOLDER`, and :func:`resolved` resolves one value against another folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy
from pydantic import BaseModel, GetCoreSchemaHandler, ValidationInfo
from pydantic_core import core_schema

# The validation context's key for the folder that relative paths are taken from: the
# config file's (load_config sets it); without it (a config built in code), the working
# folder.
FOLDER = "folder"


@dataclass(frozen=True)
class Relative:
    """Marks a setting that names a file or folder, or holds one (a URL, a program):
    validation makes it ``resolve(value, folder)``."""

    resolve: Callable[[Any, Path], Any]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler,
                                     ) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(self._validate, handler(source))

    def _validate(self, value: Any, info: ValidationInfo) -> Any:
        folder = Path((info.context or {}).get(FOLDER) or Path.cwd())
        return None if value is None else self.resolve(value, folder)


def path(value: str | Path, folder: Path) -> Path:
    return (folder / Path(value).expanduser()).resolve()


def database_url(url: str, folder: Path) -> str:
    """A SQLite URL with its relative file taken from ``folder``; other URLs as they are."""
    if not url.startswith("sqlite:///"):
        return url
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.database in (None, "", ":memory:") or Path(parsed.database).is_absolute():
        return url
    return parsed.set(database=str(path(parsed.database, folder))).render_as_string(
        hide_password=False)


def program(name: str, folder: Path) -> str:
    # As a shell takes it: a bare name is looked up on PATH, a name with a slash is a path.
    return str(path(name, folder)) if "/" in name else name


AbsolutePath = Annotated[Path, Relative(path)]
OptionalPath = Annotated[Path | None, Relative(path)]
DatabaseUrl = Annotated[str | None, Relative(database_url)]
Program = Annotated[str, Relative(program)]


def resolved(model: type[BaseModel], keys: Sequence[str], value: Any, folder: Path) -> Any:
    """``value`` for the setting of ``model`` at ``keys``, a relative path in it taken from
    ``folder`` if that setting is :class:`Relative`; else ``value`` as it is."""
    node: Any = model
    metadata: list[Any] = []
    for key in keys:
        fields = node.model_fields if isinstance(node, type) and issubclass(node, BaseModel) \
            else {}
        if key not in fields:
            return value
        node, metadata = fields[key].annotation, fields[key].metadata
    marker = next((meta for meta in metadata if isinstance(meta, Relative)), None)
    return marker.resolve(value, folder) if marker and isinstance(value, str) else value
