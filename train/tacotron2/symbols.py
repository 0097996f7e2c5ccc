"""The symbol tables: every symbol the model can read, and its integer id.

``HParams.symbol_set`` picks the table; :mod:`train.tacotron2.text` turns text into its ids.
Padding is id 0 in every table.

``project`` (the default, 39 symbols): text normalised by :func:`train.tacotron2.text.normalize`
into lower-case English letters, a few punctuation marks and spaces.

========  =========================================================
id        symbol
========  =========================================================
0         ``_``  padding (never produced by the text front end)
1         ``~``  end of sentence, appended to every utterance so the
          decoder knows where the text stops
2..11     punctuation ``! ' ( ) , . : ; ?`` and space
12        ``-``  hyphen
13..38    letters ``a``-``z``
========  =========================================================

``nvidia`` (148 symbols): the table of NVIDIA/tacotron2's ``text/symbols.py``, in its
order, so that checkpoints trained with NVIDIA's code read the same ids. Text goes
through :func:`train.tacotron2.text.english_cleaners`; no end-of-sentence mark is appended, as
in NVIDIA's ``text_to_sequence``.

========  =========================================================
id        symbol
========  =========================================================
0         ``_``  padding
1         ``-``  hyphen
2..11     punctuation ``! ' ( ) , . : ; ?`` and space
12..63    letters ``A``-``Z`` then ``a``-``z`` (the cleaners lower-case
          the text, so the capitals stay unused, as in NVIDIA's models)
64..147   ``@`` + the 84 ARPAbet phones of CMUdict, ``@AA`` to ``@ZH``,
          read from text in curly braces: ``{HH AH0 L OW1}``
========  =========================================================
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

PAD = "_"
EOS = "~"
PUNCTUATION = "!'(),.:;? "
SPECIAL = "-"
LETTERS = string.ascii_lowercase
ARPABET_MARK = "@"
# CMUdict's phones with their stress digits, in the order of NVIDIA's cmudict.valid_symbols.
ARPABET = (
    "AA", "AA0", "AA1", "AA2", "AE", "AE0", "AE1", "AE2", "AH", "AH0", "AH1", "AH2",
    "AO", "AO0", "AO1", "AO2", "AW", "AW0", "AW1", "AW2", "AY", "AY0", "AY1", "AY2",
    "B", "CH", "D", "DH", "EH", "EH0", "EH1", "EH2", "ER", "ER0", "ER1", "ER2", "EY",
    "EY0", "EY1", "EY2", "F", "G", "HH", "IH", "IH0", "IH1", "IH2", "IY", "IY0", "IY1",
    "IY2", "JH", "K", "L", "M", "N", "NG", "OW", "OW0", "OW1", "OW2", "OY", "OY0",
    "OY1", "OY2", "P", "R", "S", "SH", "T", "TH", "UH", "UH0", "UH1", "UH2", "UW",
    "UW0", "UW1", "UW2", "V", "W", "Y", "Z", "ZH",
)


@dataclass(frozen=True)
class SymbolSet:
    """One table: its symbols in id order, and the end-of-sentence mark it appends."""

    name: str
    symbols: tuple[str, ...]
    eos: str | None  # appended to every utterance; None: nothing is
    ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.symbols[0] != PAD or len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"symbol set {self.name}: padding must be id 0, symbols unique")
        object.__setattr__(self, "ids", {s: i for i, s in enumerate(self.symbols)})

    @property
    def eos_id(self) -> int | None:
        return None if self.eos is None else self.ids[self.eos]


PROJECT = SymbolSet("project", (PAD, EOS, *PUNCTUATION, *SPECIAL, *LETTERS), eos=EOS)
NVIDIA = SymbolSet("nvidia", (PAD, *SPECIAL, *PUNCTUATION, *string.ascii_uppercase, *LETTERS,
                              *(ARPABET_MARK + phone for phone in ARPABET)), eos=None)
SYMBOL_SETS: dict[str, SymbolSet] = {table.name: table for table in (PROJECT, NVIDIA)}

# The project table's names, which most of the code and the tests use.
SYMBOLS: list[str] = list(PROJECT.symbols)
SYMBOL_TO_ID: dict[str, int] = PROJECT.ids
PAD_ID = 0
EOS_ID = PROJECT.ids[EOS]
