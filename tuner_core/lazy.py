"""How heavy parts load: on first use, in one declared way.

MLflow takes seconds to import, matplotlib and torch about one each, Optuna and pydantic
half a second together; most commands and most bot replies need none of them. So:

* every package of ``tuner_core`` names its public API in its ``__init__.py`` with
  :func:`lazy_exports`, and a name's module is imported when the name is first used::

      __getattr__, __dir__, __all__ = lazy_exports(__name__, {"open_storage": ".opening"})

  ``from tuner_core import study`` is then free, and ``study.create_study(...)`` loads
  Optuna; a worker that never touches ``tracking.MlflowTracker`` never loads MLflow;
* a module of another package that only some calls need is a :class:`LazyModule`::

      data = LazyModule("train.tacotron2.data")   # torch loads at data.check_corpus(...)

Both are modelled on Optuna's ``optuna._imports._LazyImport``. Nothing else in the
project imports inside functions to put off a load.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """The ``__getattr__`` and ``__dir__`` (PEP 562) and ``__all__`` of ``package``.

    ``exports`` maps each public name to the module that defines it, relative to the
    package (``".life"``). A name is imported on first use and then kept in the package.
    """
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__, sorted(exports)


class LazyModule(types.ModuleType):
    """A module that is imported when one of its attributes is first used."""

    def __init__(self, name: str):
        super().__init__(name)

    def _load(self) -> types.ModuleType:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return module

    def __getattr__(self, item: str) -> Any:
        return getattr(self._load(), item)
