"""The symbol table: every character the model can read, and its integer id.

Text is normalised by :mod:`train.text` into lower-case English letters, a small
set of punctuation marks and spaces before it is looked up here, so this table is
all the model ever sees.

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

NVIDIA's reference table also carries upper-case letters and 84 ARPAbet phones
(148 symbols); ``n_symbols`` in :class:`train.hparams.HParams` can be set to
match it, which the architecture-fidelity test does.
"""

PAD = "_"
EOS = "~"
PUNCTUATION = "!'(),.:;? "
SPECIAL = "-"
LETTERS = "abcdefghijklmnopqrstuvwxyz"

SYMBOLS: list[str] = [PAD, EOS, *PUNCTUATION, *SPECIAL, *LETTERS]
SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS)}
PAD_ID = SYMBOL_TO_ID[PAD]
EOS_ID = SYMBOL_TO_ID[EOS]
