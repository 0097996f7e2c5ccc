"""The errors a front end (the CLI, the bot, a user's script) catches and shows.

Each message is one line (a :class:`ConfigError`, one per problem) that says what is
wrong and where, written for the person who reads it. They live here, apart from the
code that raises them, so that catching one loads none of Optuna, MLflow or pydantic.
"""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A config that cannot be used; ``problems`` holds one ``key.path: what is wrong`` each."""

    def __init__(self, source: str | Path, problems: list[str]):
        self.source = str(source)
        self.problems = problems
        super().__init__("\n  ".join([f"{source}:", *problems]))


class NotReady(RuntimeError):
    """A study that cannot work with this config; the message is one line saying why."""


class StorageUnavailable(RuntimeError):
    """The storage cannot be opened; the message is one line naming it and why."""


class StudyNotFound(LookupError):
    """No study of that name in the storage; the message lists the ones there are."""


class StudyBusy(RuntimeError):
    """The study still has running trials; it must be stopped first."""


class RegistryError(LookupError):
    """A model version or alias that does not exist; the message lists the known ones."""


class RequirementsUnmet(RegistryError):
    """A version that fails ``registry.requirements``, refused promotion; ``failed`` names
    each requirement with the value it had."""

    def __init__(self, version: str, failed: list[str]):
        super().__init__(f"version {version} fails the registry's requirements: "
                         f"{'; '.join(failed)} (promote --force to promote it anyway)")
        self.version, self.failed = version, failed
