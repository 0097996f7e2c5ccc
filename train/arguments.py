"""Value types and arguments shared by the project's command lines (argparse ``type=``
callables, ``--vocoder``), and the name a command shows in its ``--help``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from train.tacotron2.vocoder import spec_problem


def positive_int(text: str) -> int:
    """A whole number of at least 1, or an argparse error that says what was wrong."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def vocoder_spec(text: str) -> str:
    """A vocoder's name or generator checkpoint (see train.tacotron2.vocoder), or an argparse
    error that lists the names."""
    if problem := spec_problem(text):
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return text


def add_vocoder_argument(parser: argparse.ArgumentParser) -> None:
    """``--vocoder``: the vocoder that speaks, instead of the checkpoint's ``vocoder`` hparam."""
    parser.add_argument("--vocoder", type=vocoder_spec, metavar="VOCODER",
                        help="griffin_lim, hifigan_universal, hifigan_ljspeech, a HiFi-GAN "
                             "generator checkpoint, or auto (default: the checkpoint's "
                             "vocoder hparam, auto unless set)")


def program_name(module: str) -> str | None:
    """The name ``--help`` shows: ``python -m MODULE`` when this process was started so,
    else None (argparse then shows the script's own name, e.g. an installed
    ``smart-tuner-train``).

    ``MODULE`` is a package run by its ``__main__`` or a module run itself
    (``train.synthesize``). How the process was started is read from ``__main__``'s
    module spec, which ``python -m`` sets and a console script leaves unset; the script's
    path (``sys.argv[0]``) cannot tell: it is ``.../train/synthesize.py`` for ``python -m
    train.synthesize`` and any package's ``__main__.py`` (``python -m pytest``) for a
    ``python -m`` of that package.
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    started = getattr(spec, "name", None)
    return f"python -m {module}" if started in (module, f"{module}.__main__") else None


def invoked_as(module: str) -> str:
    """The command the user typed for ``module``: ``python -m MODULE`` or the script's name."""
    return program_name(module) or Path(sys.argv[0]).name


def described(doc: str, module: str) -> str:
    """``doc`` (a command's ``--help`` description) with its examples' ``python -m MODULE``
    written as this process was invoked, e.g. ``smart-tuner-train --data ...``."""
    return re.sub(rf"python -m {re.escape(module)}(?![\w.])", lambda _: invoked_as(module), doc)
