"""How a model sounds, in the chat's words: the lines /best adds, the note on a new best
that fails ``registry.requirements``, and a refused promotion.

HTML parse mode, as every text in :mod:`bot.messages`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from tuner_core.reporting.summary import listening_line


def best_lines(best: Mapping[str, Any]) -> list[str]:
    """/best: the best trial's listening evaluation, and whether it meets the requirements."""
    lines = [f"👂 As a listener hears it: {html.escape(listening_line(best.get('listening')))}"]
    if best.get("requirements_unmet"):
        lines.append("⚠️ Fails the registry's requirements: "
                     + html.escape("; ".join(best["requirements_unmet"])))
    return lines


def new_best_note(facts: Mapping[str, Any]) -> str:
    """The line a new best's notification ends with when it fails the requirements (it is
    then not registered), else nothing."""
    if not facts.get("requirements_unmet"):
        return ""
    return ("\n⚠️ Not registered as a model version: it fails "
            + html.escape("; ".join(facts["requirements_unmet"])))


def refused(version: int, failed: list[str]) -> str:
    """The Promote button's answer for a version that fails the requirements."""
    return (f"Version {version} is not promoted: it fails the registry's requirements "
            f"({html.escape('; '.join(failed))}). <code>python -m tuner_core promote {version} "
            "--force</code> promotes it anyway.")
