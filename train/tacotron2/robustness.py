"""Robustness as FastSpeech (Ren et al. 2019) counts it: which words free-running
attention skipped, and which it read twice.

The attention (decoder steps × text tokens) of a sentence spoken from its text alone is
followed by :func:`train.tacotron2.alignment.reading`; here its tokens become words. A
word is *skipped* when none of its tokens was read (jumped over, or never reached before
the speech ended) and *repeated* when any was read again after the attention had moved
on past it. Consecutive such words make one span, reported as text ("clever bottle").
The hard sentences that :mod:`train.corpus` writes (``hard.csv``: long ones, numbers,
repeated words, lists) are where a model slips.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from train.tacotron2.alignment import reading
from train.tacotron2.symbols import ARPABET_MARK, SYMBOL_SETS
from train.tacotron2.text import text_to_sequence


class Robustness(NamedTuple):
    skipped: list[str]  # spans of words never read, in text order
    repeated: list[str]  # spans of words read again

    @property
    def clean(self) -> bool:
        return not self.skipped and not self.repeated


class Word(NamedTuple):
    text: str
    first: int  # its first token
    last: int  # its last token (inclusive)


def _in_word(symbol: str) -> bool:
    return symbol.isalnum() or symbol == "'" or (symbol.startswith(ARPABET_MARK) and
                                                 len(symbol) > 1)


def words(text: str, symbol_set: str) -> list[Word]:
    """The words of ``text`` as the model reads it: runs of letters (or phones) among its
    tokens, split by spaces, hyphens and punctuation."""
    symbols = [SYMBOL_SETS[symbol_set].symbols[i] for i in text_to_sequence(text, symbol_set)]
    found, start = [], None
    for position, symbol in enumerate([*symbols, " "]):
        if _in_word(symbol) and start is None:
            start = position
        elif not _in_word(symbol) and start is not None:
            word = symbols[start:position]
            shown = " ".join(s[1:] for s in word) if word[0].startswith(ARPABET_MARK) else \
                "".join(word)
            found.append(Word(shown, start, position - 1))
            start = None
    return found


def _spans(text_words: list[Word], flagged: list[bool]) -> list[str]:
    spans, current = [], []
    for word, flag in zip(text_words, flagged, strict=True):
        if flag:
            current.append(word.text)
        elif current:
            spans.append(" ".join(current))
            current = []
    return [*spans, " ".join(current)] if current else spans


def utterance_robustness(attention: np.ndarray | torch.Tensor, text: str,
                         symbol_set: str) -> Robustness:
    """The skipped and repeated spans of ``text`` in its free-running ``attention``
    (decoder steps, tokens of ``text_to_sequence(text, symbol_set)``)."""
    weights = torch.as_tensor(attention).float()
    text_words = words(text, symbol_set)
    if weights.size(1) != len(text_to_sequence(text, symbol_set)):
        raise ValueError(f"attention over {weights.size(1)} tokens does not read {text!r}")
    if weights.size(0) == 0:  # nothing spoken: every word skipped
        return Robustness(_spans(text_words, [True] * len(text_words)), [])
    read = reading(weights)
    skipped = [not read.read[w.first:w.last + 1].any() for w in text_words]
    repeated = [bool(read.reread[w.first:w.last + 1].any()) for w in text_words]
    return Robustness(_spans(text_words, skipped), _spans(text_words, repeated))
