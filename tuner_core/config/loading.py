"""Loading the YAML config: the file, ``${VAR}`` references, environment defaults and
``--set`` overrides, then validation (:mod:`tuner_core.config.sections`).

    config = load_config("config/smart_tuner.yaml")

Loading goes in four steps, and a :class:`~tuner_core.errors.ConfigError` after any of
them lists every problem found as ``key.path: what is wrong``:

1. read the YAML file (a syntax error names the file and line);
2. expand ``${VAR}`` and ``${VAR:-default}`` in string values from the environment;
3. fill settings the file leaves out from :data:`ENVIRONMENT_DEFAULTS` (secrets, URLs);
4. validate with the pydantic models of :mod:`tuner_core.config.sections`.

Relative paths in the file are taken from the file's folder; those of ``--set`` values and
environment defaults from the working folder (:mod:`tuner_core.config.paths`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tuner_core.config.paths import FOLDER, resolved
from tuner_core.config.problems import Loc, dotted, problem_line
from tuner_core.config.sections import Config
from tuner_core.errors import ConfigError

# Settings taken from the environment when the file leaves them out (or null or empty).
ENVIRONMENT_DEFAULTS: dict[tuple[str, ...], str] = {
    ("storage",): "SMART_TUNER_STORAGE",
    ("mlflow", "tracking_uri"): "MLFLOW_TRACKING_URI",
    ("telegram", "bot_token"): "TELEGRAM_BOT_TOKEN",
    ("telegram", "chat_id"): "TELEGRAM_CHAT_ID",
    ("telegram", "allowed_users"): "TELEGRAM_ALLOWED_USERS",
}


def load_config(path: str | Path, environ: Mapping[str, str] | None = None,
                overrides: Sequence[str] = ()) -> Config:
    """Read, expand and validate the YAML config at ``path``.

    ``environ`` (default ``os.environ``) supplies ``${VAR}`` references and
    :data:`ENVIRONMENT_DEFAULTS`. ``overrides`` are ``key.path=value`` settings (a
    command line's ``--set``) that replace the file's, the value read as YAML.
    Raises :class:`ConfigError` listing every problem.
    """
    environ = os.environ if environ is None else environ
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, ["no such file; `smart-tuner init` (python -m tuner_core "
                                 "init) writes a starter config"]) from None
    except OSError as error:
        raise ConfigError(path, [f"cannot read the file: {error.strerror or error}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or error
        raise ConfigError(path, [f"{where}invalid YAML: {problem}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, [f"expected a mapping of settings, got {type(data).__name__}"])

    problems: list[str] = []
    data = _expand_references(data, environ, (), problems)
    for override in overrides:
        _apply_override(data, override, problems)
    if problems:
        raise ConfigError(path, problems)
    _apply_environment_defaults(data, environ)
    try:
        return Config.model_validate(data, context={FOLDER: Path(path).resolve().parent})
    except ValidationError as error:
        raise ConfigError(path, [problem_line(detail) for detail in error.errors()]) from None


_REFERENCE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def _expand_references(node: Any, environ: Mapping[str, str], loc: Loc,
                       problems: list[str]) -> Any:
    """``node`` with ``${VAR}`` / ``${VAR:-default}`` in its strings replaced, as a shell does.

    A variable that is unset, and has no default, is added to ``problems``.
    """
    if isinstance(node, dict):
        return {key: _expand_references(value, environ, (*loc, key), problems)
                for key, value in node.items()}
    if isinstance(node, list):
        return [_expand_references(item, environ, (*loc, index), problems)
                for index, item in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(reference: re.Match[str]) -> str:
        name, default = reference["name"], reference["default"]
        value = environ.get(name)
        if value:
            return value
        if default is not None:  # as in the shell, ":-" also replaces an empty value
            return default
        if value is None:
            problems.append(f"{dotted(loc)}: environment variable {name} is not set "
                            f"(or write ${{{name}:-default}})")
        return ""

    return _REFERENCE.sub(substitute, node)


def _apply_environment_defaults(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Fill settings missing from ``data`` from :data:`ENVIRONMENT_DEFAULTS`, in place."""
    for (*sections, key), variable in ENVIRONMENT_DEFAULTS.items():
        value = environ.get(variable)
        block = _block(data, sections) if value else None
        if block is not None and block.get(key) in (None, ""):
            block[key] = resolved(Config, (*sections, key), value, Path.cwd())


def _apply_override(data: dict[str, Any], override: str, problems: list[str]) -> None:
    """Set ``key.path=value`` in ``data``, the value read as YAML; or add a problem."""
    dotted, _, text = override.partition("=")
    *sections, key = dotted.strip().split(".")
    if "=" not in override or not all([*sections, key]):
        problems.append(f"--set {override}: expected KEY.PATH=VALUE, e.g. "
                        "optimization.n_trials=10")
        return
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problems.append(f"{dotted}: --set value {text!r} is not valid YAML: "
                        f"{getattr(error, 'problem', None) or error}")
        return
    block = _block(data, sections)
    if block is None:
        problems.append(f"{dotted}: --set cannot set it, {'.'.join(sections)} is not a block "
                        "of settings")
        return
    block[key] = resolved(Config, (*sections, key), value, Path.cwd())


def _block(data: dict[str, Any], sections: Sequence[str]) -> dict[str, Any] | None:
    """The block ``data[s1][s2]...``, created where missing or null; None where a
    setting that is not a block is in the way (validation reports the malformed one)."""
    block = data
    for section in sections:
        if block.get(section) is None:
            block[section] = {}
        block = block[section]
        if not isinstance(block, dict):
            return None
    return block
