"""Value types shared by the project's command lines (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def positive_int(text: str) -> int:
    """A whole number of at least 1, or an argparse error that says what was wrong."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def program_name(package: str) -> str | None:
    """The name ``--help`` shows: ``python -m PACKAGE`` when run so, else None (argparse
    then shows the script's own name, e.g. an installed ``smart-tuner``)."""
    return f"python -m {package}" if Path(sys.argv[0]).name == "__main__.py" else None
