"""The text front end: raw English text to the symbol ids the model reads.

Each symbol set of :mod:`train.tacotron2.symbols` has its own front end, and
:func:`text_to_sequence` picks it: :func:`normalize` for ``project``,
:func:`english_cleaners` (NVIDIA's) for ``nvidia``.

:func:`normalize` rewrites text in the order below; each step relies on the ones before it.

1. Unicode NFKC, so full-width digits, ligatures and the like become plain characters.
2. Typographic marks: curly single quotes become ``'``, double quotes of any kind are
   dropped (the symbol table has none), en and em dashes become a comma pause, the minus
   sign a hyphen-minus, ``&`` becomes "and".
3. Abbreviations, written with their period (``vs`` may omit it), from :data:`ABBREVIATIONS`,
   in any case. ``st.`` reads "saint", as in "St. Louis"; a street name reads wrong, a known
   limit. The period stays as a full stop where the abbreviation ends the sentence: at the
   end of the text, and for "etc." before a capitalised word.
4. Lower case.
5. Numbers, most specific form first:

   ==============  ==================================================
   ``$5.20``       "five dollars, twenty cents" (also ``£`` and ``€``)
   ``50%``         "fifty percent"
   ``10:30``       "ten thirty"; ``7:00`` "seven o'clock"
   ``21st``        "twenty-first"
   ``1984``        "nineteen eighty-four": a plain four-digit number from 1100
                   to 2099 reads as a year, except 2000-2009 ("two thousand five")
   ``-1,234.5``    "minus one thousand two hundred thirty-four point five"
   ==============  ==================================================

6. Accents transliterated to ASCII (``café`` -> ``cafe``, ``straße`` -> ``strasse``).
7. Every character outside :data:`train.tacotron2.symbols.SYMBOLS` (and the padding and
   end-of-sentence marks, which only code adds) becomes a space.
8. Whitespace collapsed, and no space left before closing punctuation.

:func:`text_to_sequence` then maps the result to ids and appends the end-of-sentence id.

:func:`english_cleaners` follows NVIDIA's cleaner of that name: ASCII, lower case, numbers
and :data:`NVIDIA_ABBREVIATIONS` spelt out, runs of whitespace made one space; the symbols
outside the table are then dropped, and text in curly braces is read as ARPAbet phones. Two
known differences: numbers are read by :func:`expand_numbers` (NVIDIA's inflect-based
reader puts commas between the thousands: "one thousand, two hundred thirty-four"), and
ASCII comes from Unicode decomposition, not unidecode, so typographic quotes and dashes
are dropped rather than replaced.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from train.tacotron2.symbols import ARPABET_MARK, EOS, NVIDIA, PAD, PAD_ID, SYMBOL_SETS, SYMBOLS

ABBREVIATIONS: dict[str, str] = {
    "mr": "mister",
    "mrs": "missus",
    "ms": "miz",
    "dr": "doctor",
    "prof": "professor",
    "st": "saint",
    "jr": "junior",
    "maj": "major",
    "drs": "doctors",
    "esq": "esquire",
    "sr": "senior",
    "capt": "captain",
    "col": "colonel",
    "gen": "general",
    "lt": "lieutenant",
    "sgt": "sergeant",
    "rev": "reverend",
    "hon": "honorable",
    "mt": "mount",
    "ft": "fort",
    "co": "company",
    "inc": "incorporated",
    "ltd": "limited",
    "etc": "et cetera",
    "vs": "versus",
    "e.g": "for example",
    "i.e": "that is",
}
"""Abbreviation (lower case, without its final period) -> what is said."""

NVIDIA_ABBREVIATIONS: dict[str, str] = {
    "mrs": "misess", "mr": "mister", "dr": "doctor", "st": "saint", "co": "company",
    "jr": "junior", "maj": "major", "gen": "general", "drs": "doctors", "rev": "reverend",
    "lt": "lieutenant", "hon": "honorable", "sgt": "sergeant", "capt": "captain",
    "esq": "esquire", "ltd": "limited", "col": "colonel", "ft": "fort",
}
"""NVIDIA's english_cleaners abbreviations, its spelling ("misess") included."""

CURRENCIES: dict[str, tuple[str, str, str, str]] = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
}
"""Currency sign -> (unit, units, hundredth, hundredths)."""

# ---------------------------------------------------------------------------------------------
# Numbers to words (American style: no "and" after "hundred").
# ---------------------------------------------------------------------------------------------

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ("", " thousand", " million", " billion", " trillion", " quadrillion", " quintillion")
_IRREGULAR_ORDINALS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth",
    "eight": "eighth", "nine": "ninth", "twelve": "twelfth",
}


def _below_thousand(n: int) -> str:
    """Words for 1 <= n <= 999."""
    hundreds, rest = divmod(n, 100)
    words = [f"{_ONES[hundreds]} hundred"] if hundreds else []
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens] + (f"-{_ONES[ones]}" if ones else ""))
    elif rest:
        words.append(_ONES[rest])
    return " ".join(words)


def _digits(digits: str) -> str:
    """Digit by digit: "14" -> "one four"."""
    return " ".join(_ONES[int(d)] for d in digits)


def cardinal(n: int) -> str:
    """``1234`` -> "one thousand two hundred thirty-four"; negative numbers read "minus ..."."""
    if n < 0:
        return f"minus {cardinal(-n)}"
    if n == 0:
        return "zero"
    if n >= 1000 ** len(_SCALES):
        return _digits(str(n))  # past the named scales nobody says it any other way
    groups = []
    for scale in _SCALES:
        n, group = divmod(n, 1000)
        if group:
            groups.append(_below_thousand(group) + scale)
        if not n:
            break
    return " ".join(reversed(groups))


def ordinal(n: int) -> str:
    """``21`` -> "twenty-first"."""
    words = cardinal(n)
    head, last = re.match(r"(.*?)([a-z]+)$", words).groups()
    if last in _IRREGULAR_ORDINALS:
        return head + _IRREGULAR_ORDINALS[last]
    if last.endswith("y"):
        return head + last[:-1] + "ieth"
    return head + last + "th"


def _is_year(n: int) -> bool:
    return 1100 <= n <= 2099 and not 2000 <= n <= 2009


def year(n: int) -> str:
    """``1984`` -> "nineteen eighty-four", ``1905`` -> "nineteen oh five", ``1900`` ->
    "nineteen hundred"."""
    century, rest = divmod(n, 100)
    if rest == 0:
        return f"{cardinal(century)} hundred"
    if rest < 10:
        return f"{cardinal(century)} oh {cardinal(rest)}"
    return f"{cardinal(century)} {cardinal(rest)}"


# An integer, with thousands separators only where they come in proper groups of three.
_INTEGER = r"[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+"
_MONEY_RE = re.compile(rf"([$£€])\s?({_INTEGER})(?:\.([0-9]+))?")
_PERCENT_RE = re.compile(r"(?<=[0-9])\s?%")
_TIME_RE = re.compile(r"\b([0-9]{1,2}):([0-9]{2})\b")
_ORDINAL_RE = re.compile(rf"\b({_INTEGER})(st|nd|rd|th)\b")
# A minus sign only where it cannot be a hyphen joining two words or numbers ("1990-1995").
_NUMBER_RE = re.compile(rf"(?:(?<![\w.])(-))?({_INTEGER})(?:\.([0-9]+))?")


def _to_int(integer: str) -> int:
    return int(integer.replace(",", ""))


def _say_money(match: re.Match[str]) -> str:
    unit, units, hundredth, hundredths = CURRENCIES[match[1]]
    whole, fraction = _to_int(match[2]), match[3]
    if fraction is not None and len(fraction) != 2:
        return f"{cardinal(whole)} point {_digits(fraction)} {units}"  # "$1.5" is not cents
    cents = int(fraction or 0)
    parts = []
    if whole or not cents:
        parts.append(f"{cardinal(whole)} {unit if whole == 1 else units}")
    if cents:
        parts.append(f"{cardinal(cents)} {hundredth if cents == 1 else hundredths}")
    return ", ".join(parts)


def _say_time(match: re.Match[str]) -> str:
    hours, minutes = int(match[1]), int(match[2])
    if minutes == 0:
        return f"{cardinal(hours)} o'clock"
    if minutes < 10:
        return f"{cardinal(hours)} oh {cardinal(minutes)}"
    return f"{cardinal(hours)} {cardinal(minutes)}"


def _say_number(match: re.Match[str]) -> str:
    minus, integer, fraction = match.groups()
    value = _to_int(integer)
    if not minus and fraction is None and len(integer) == 4 and _is_year(value):
        words = year(value)
    else:
        words = cardinal(value)
    if fraction is not None:
        words += f" point {_digits(fraction)}"
    return f"minus {words}" if minus else words


def expand_numbers(text: str) -> str:
    """Spell out money, percentages, times, ordinals, years and other numbers."""
    text = _MONEY_RE.sub(_say_money, text)
    text = _PERCENT_RE.sub(" percent", text)
    text = _TIME_RE.sub(_say_time, text)
    text = _ORDINAL_RE.sub(lambda m: ordinal(_to_int(m[1])), text)
    return _NUMBER_RE.sub(_say_number, text)


# ---------------------------------------------------------------------------------------------
# The rest of the pipeline.
# ---------------------------------------------------------------------------------------------

_TYPOGRAPHY = str.maketrans({
    "‘": "'", "’": "'", "‚": "'", "‛": "'", "`": "'", "´": "'",
    "“": None, "”": None, "„": None, "‟": None, '"': None, "«": None, "»": None,
    "−": "-", "&": " and ",
})
_DASH_RE = re.compile(r"\s*[–—―]\s*")
_ABBREVIATION_RE = re.compile(
    r"\b(" + "|".join(re.escape(a) for a in sorted(ABBREVIATIONS, key=len, reverse=True))
    + r")\.|\bvs\b", re.IGNORECASE)
_NEW_SENTENCE_RE = re.compile(r"\s+[A-Z]")
_NVIDIA_ABBREVIATION_RE = re.compile(r"\b(" + "|".join(NVIDIA_ABBREVIATIONS) + r")\.")
_WHITESPACE_RE = re.compile(r"\s+")
# NVIDIA's text_to_sequence: (text before) {ARPAbet phones} (the rest).
_CURLY_RE = re.compile(r"(.*?)\{(.+?)\}(.*)", re.DOTALL)
# Letters that Unicode decomposition leaves alone, so accent stripping would lose them.
_LIGATURES = str.maketrans({"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d",
                            "ð": "d", "þ": "th", "ı": "i"})
# Padding and end-of-sentence marks are added by code, never read from text.
_SPOKEN_SYMBOLS = "".join(s for s in SYMBOLS if s not in (PAD, EOS))
_UNKNOWN_RE = re.compile("[^" + re.escape(_SPOKEN_SYMBOLS) + "]")
_SPACE_BEFORE_PUNCTUATION_RE = re.compile(r" +(?=[!),.:;?])")


def _to_ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _say_abbreviation(match: re.Match[str]) -> str:
    abbreviation = (match[1] or "vs").lower()
    rest = match.string[match.end():]
    # The period of an abbreviation that ends the sentence is also its full stop.
    ends_sentence = not rest.strip() or (abbreviation == "etc" and _NEW_SENTENCE_RE.match(rest))
    said = ABBREVIATIONS[abbreviation]
    return f"{said}." if match[1] and ends_sentence else said


def normalize(text: str) -> str:
    """Rewrite English text into the symbol set: see the module docstring for the steps."""
    text = unicodedata.normalize("NFKC", text)
    text = _DASH_RE.sub(", ", text.translate(_TYPOGRAPHY))
    text = _ABBREVIATION_RE.sub(_say_abbreviation, text)  # before lower case: "etc. The"
    text = text.lower()
    text = expand_numbers(text)
    text = _to_ascii(text)
    text = _UNKNOWN_RE.sub(" ", text)
    text = " ".join(text.split())
    return _SPACE_BEFORE_PUNCTUATION_RE.sub("", text)


def english_cleaners(text: str) -> str:
    """NVIDIA's ``english_cleaners``: see the module docstring for where it differs."""
    text = _to_ascii(text).lower()
    text = expand_numbers(text)
    text = _NVIDIA_ABBREVIATION_RE.sub(lambda m: NVIDIA_ABBREVIATIONS[m[1]], text)
    return _WHITESPACE_RE.sub(" ", text)


def _nvidia_symbols(text: str) -> list[str]:
    """Symbols of NVIDIA's front end, ARPAbet in curly braces included; unknown ones dropped."""
    symbols: list[str] = []
    while text:
        match = _CURLY_RE.match(text)
        if match is None:
            symbols += english_cleaners(text)
            break
        symbols += english_cleaners(match[1])
        symbols += [ARPABET_MARK + phone for phone in match[2].split()]
        text = match[3]
    return [s for s in symbols if s in NVIDIA.ids and s != PAD]


def text_to_sequence(text: str, symbol_set: str) -> list[int]:
    """Symbol ids of ``text`` in the table ``symbol_set`` (see :mod:`train.tacotron2.symbols`).

    ``project``: ``normalize(text)`` followed by the end-of-sentence id; ``nvidia``: as
    NVIDIA's ``text_to_sequence(text, ["english_cleaners"])``, without one. The ids never
    contain the padding id; text with nothing left to say raises ``ValueError``.
    """
    table = SYMBOL_SETS[symbol_set]
    symbols = _nvidia_symbols(text) if table is NVIDIA else list(normalize(text))
    if not "".join(symbols).strip():
        raise ValueError(f"text {text!r} has nothing left to say after normalisation")
    ids = [table.ids[symbol] for symbol in symbols]
    return ids if table.eos_id is None else [*ids, table.eos_id]


def sequence_to_text(ids: Iterable[int], symbol_set: str) -> str:
    """The symbols behind ``ids``, without padding and end-of-sentence marks (for debugging).

    ARPAbet phones come back in curly braces, a run of them in one pair: ``{HH AH0}``.
    """
    table = SYMBOL_SETS[symbol_set]
    pieces = []
    for i in ids:
        if not 0 <= i < len(table.symbols):
            raise ValueError(f"symbol id {i} is outside the table (0..{len(table.symbols) - 1})")
        if i not in (PAD_ID, table.eos_id):
            symbol = table.symbols[i]
            is_phone = symbol.startswith(ARPABET_MARK) and len(symbol) > 1
            pieces.append(f"{{{symbol[1:]}}}" if is_phone else symbol)
    return "".join(pieces).replace("}{", " ")
