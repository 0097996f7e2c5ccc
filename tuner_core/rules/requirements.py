"""What a model is judged by as a listener would, and the requirements it must meet.

A trial's listening evaluation (``python -m train.evaluate``, its summary) measures
:data:`LISTENING_METRICS`. ``registry.requirements`` bounds some of them::

    requirements = parse_requirements({"stop_rate": ">= 0.9", "skipped": "== 0"})
    unmet(requirements, listening)   # ["stop_rate >= 0.9 (was 0.67)"]: empty when all pass

A metric the evaluation did not measure (``cer`` with the recogniser off) fails its
requirement: a model is never passed on what nobody heard.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

# The summary's metrics, each with the direction that is better (None: neither is).
LISTENING_METRICS: dict[str, str | None] = {
    "stop_rate": "maximize",     # share of sentences the gate stopped
    "length_ratio": None,        # mean length against the recordings': 1 is right
    "cer": "minimize",           # the recogniser's character error rate on the speech
    "cer_reference": None,       # on the corpus's recordings of the same sentences
    "cer_ratio": "minimize",     # cer / cer_reference: 1 is as intelligible as they are
    "mcd": "minimize",           # mel-cepstral distortion from the recordings, dB
    "skipped": "minimize",       # utterances whose attention skipped words
    "repeated": "minimize",      # utterances whose attention read words twice
}
# Those a study may optimise (optimization.objective_metric).
LISTENED_OBJECTIVES = tuple(name for name, better in LISTENING_METRICS.items() if better)

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "<": operator.lt, ">": operator.gt}
_EXPRESSION = re.compile(r"\s*(<=|>=|==|<|>)\s*(\S+)\s*")


class Requirement(NamedTuple):
    metric: str
    comparison: str
    bound: float

    def met_by(self, value: Any) -> bool:
        return (isinstance(value, int | float) and math.isfinite(value)
                and _COMPARISONS[self.comparison](value, self.bound))

    def __str__(self) -> str:
        return f"{self.metric} {self.comparison} {self.bound:g}"


def parse_requirement(metric: str, expression: Any) -> Requirement:
    """``expression`` (``">= 0.9"``, or a bare number for ``==``) as a requirement on
    ``metric``; a ValueError that says what is wrong."""
    if isinstance(expression, int | float) and not isinstance(expression, bool):
        return Requirement(metric, "==", float(expression))
    match = _EXPRESSION.fullmatch(str(expression))
    try:
        bound = float(match.group(2)) if match else math.nan
    except ValueError:
        bound = math.nan
    if match is None or not math.isfinite(bound):
        raise ValueError(f"{expression!r} is not a requirement: write a comparison "
                         f"({', '.join(_COMPARISONS)}) and a number, e.g. '<= 1.5'")
    return Requirement(metric, match.group(1), bound)


def parse_requirements(requirements: Mapping[str, Any]) -> list[Requirement]:
    return [parse_requirement(metric, expression) for metric, expression in requirements.items()]


def unmet(requirements: list[Requirement], listening: Mapping[str, Any] | None) -> list[str]:
    """The requirements ``listening`` (an evaluation's summary; None: not evaluated) fails,
    each with the value it had."""
    failed = []
    for requirement in requirements:
        value = (listening or {}).get(requirement.metric)
        if not requirement.met_by(value):
            had = ("not evaluated" if listening is None else "not measured" if value is None
                   else f"was {value:.3g}")
            failed.append(f"{requirement} ({had})")
    return failed
