"""A trial's recommendation against its study: which hyperparameters it names the study
searches, and which are fixed, for a person to change in the config.

The early-stopping rules advise in general terms ("lower the learning rate or lengthen
warmup_steps"); whether that is the sampler's business or the user's depends on the
study. A name counts when it is written as the hyperparameter (``warmup_steps``) or in
words (``learning rate``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection

from train.tacotron2.hparams import HParams

HPARAM_NAMES = tuple(field.name for field in dataclasses.fields(HParams))


def named_hparams(recommendation: str) -> list[str]:
    """The hyperparameters ``recommendation`` names, in the order it names them."""
    found: dict[str, int] = {}
    for name in HPARAM_NAMES:
        pattern = rf"\b(?:{re.escape(name)}|{re.escape(name.replace('_', ' '))})\b"
        if match := re.search(pattern, recommendation):
            found[name] = match.start()
    return sorted(found, key=found.__getitem__)


def split_by_search_space(recommendation: str,
                          search_space: Collection[str]) -> dict[str, list[str]]:
    """The hyperparameters ``recommendation`` names: ``searched`` (the study's sampler
    tries other values) and ``in_config`` (fixed for the study: the user's to change)."""
    named = named_hparams(recommendation)
    return {"searched": [name for name in named if name in search_space],
            "in_config": [name for name in named if name not in search_space]}
