import pytest

from train.tacotron2.symbols import ARPABET, EOS_ID, NVIDIA, PAD_ID, SYMBOLS
from train.tacotron2.text import english_cleaners, normalize, sequence_to_text, text_to_sequence


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ("0", "zero"),
        ("7", "seven"),
        ("13", "thirteen"),
        ("40", "forty"),
        ("99", "ninety-nine"),
        ("105", "one hundred five"),
        ("1,234", "one thousand two hundred thirty-four"),
        ("1,000,000", "one million"),
        ("2,000,017", "two million seventeen"),
        ("-5", "minus five"),
        ("3.5", "three point five"),
        ("-0.25", "minus zero point two five"),
        ("10000", "ten thousand"),
    ],
)
def test_cardinals_and_decimals(raw: str, said: str) -> None:
    assert normalize(raw) == said


def test_hyphen_between_words_or_numbers_is_not_a_minus() -> None:
    assert normalize("x-5") == "x-five"
    assert normalize("pages 10-12") == "pages ten-twelve"


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ("1st", "first"),
        ("2nd", "second"),
        ("3rd", "third"),
        ("12th", "twelfth"),
        ("21st", "twenty-first"),
        ("30th", "thirtieth"),
        ("100th", "one hundredth"),
        ("1,000,000th", "one millionth"),
    ],
)
def test_ordinals(raw: str, said: str) -> None:
    assert normalize(raw) == said


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ("$5.20", "five dollars, twenty cents"),
        ("$1", "one dollar"),
        ("$0.01", "one cent"),
        ("$2,500", "two thousand five hundred dollars"),
        ("$1.5", "one point five dollars"),
        ("£3.50", "three pounds, fifty pence"),
        ("€10", "ten euros"),
        ("50%", "fifty percent"),
        ("2.5 %", "two point five percent"),
    ],
)
def test_money_and_percentages(raw: str, said: str) -> None:
    assert normalize(raw) == said


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ("1984", "nineteen eighty-four"),
        ("1905", "nineteen oh five"),
        ("1900", "nineteen hundred"),
        ("1100", "eleven hundred"),
        ("2005", "two thousand five"),
        ("2023", "twenty twenty-three"),
        ("1099", "one thousand ninety-nine"),
        ("2100", "two thousand one hundred"),
        ("1,984", "one thousand nine hundred eighty-four"),
    ],
)
def test_years_only_for_plain_four_digit_numbers_in_range(raw: str, said: str) -> None:
    assert normalize(raw) == said


def test_times() -> None:
    assert normalize("at 10:30, 7:00 or 9:05") == "at ten thirty, seven o'clock or nine oh five"


def test_abbreviations() -> None:
    assert normalize("Dr. Smith met Mr. and Mrs. Lee at St. Louis.") == (
        "doctor smith met mister and missus lee at saint louis."
    )
    assert normalize("Acme Co. Ltd. vs Jones Jr., e.g. fruit, i.e. apples etc.") == (
        "acme company limited versus jones junior, for example fruit, that is apples et cetera."
    )


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ("Pens, ink, etc.", "pens, ink, et cetera."),
        ("Pens, ink, etc. Then paper.", "pens, ink, et cetera. then paper."),
        ("Pens, etc., and paper.", "pens, et cetera, and paper."),
        ("Ask Mr. Lee.", "ask mister lee."),
        ("Ask Mr. Lee Jr.", "ask mister lee junior."),
        ("Maj. Lee, Drs. Ng and Esq.", "major lee, doctors ng and esquire."),
    ],
)
def test_an_abbreviation_ending_the_sentence_keeps_its_full_stop(raw: str, said: str) -> None:
    assert normalize(raw) == said


def test_abbreviation_needs_its_period_and_a_word_boundary() -> None:
    assert normalize("the dr and the doctor") == "the dr and the doctor"
    assert normalize("the west.") == "the west."


def test_punctuation_quotes_and_dashes() -> None:
    assert normalize("Wait\u2014what?! \u201cYes,\u201d she said; \u2018fine\u2019: (ok)") == (
        "wait, what?! yes, she said; 'fine': (ok)"
    )
    assert normalize('He said "hi" & left.') == "he said hi and left."
    assert normalize("\u22125") == "minus five"


def test_accents_are_transliterated() -> None:
    assert normalize("Café naïve Straße Ærø Łódź") == "cafe naive strasse aero lodz"


def test_unknown_characters_dropped_and_whitespace_collapsed() -> None:
    assert normalize("  a/b  #c_d~e 日本 \U0001f600 end  .\n") == "a b c d e end."


@pytest.mark.parametrize(
    "raw", ["Dr. Smith paid $5.20 on May 21st, 1984!", "It's -3.5% at 7:00, e.g. \u201cfine\u201d."]
)
def test_normalised_text_normalises_to_itself(raw: str) -> None:
    # The trainer reads the corpus's normalized column and passes it through normalize again.
    once = normalize(raw)
    assert normalize(once) == once


def test_text_to_sequence_maps_symbols_and_appends_eos() -> None:
    ids = text_to_sequence("Hi, Bob!", "project")
    assert ids == [SYMBOLS.index(s) for s in "hi, bob!"] + [EOS_ID]
    assert ids.count(EOS_ID) == 1
    assert PAD_ID not in ids


def test_pad_and_eos_characters_in_text_are_not_read_as_symbols() -> None:
    ids = text_to_sequence("a_b~c", "project")
    assert PAD_ID not in ids
    assert ids.count(EOS_ID) == 1


def test_round_trip_gives_the_normalised_text() -> None:
    raw = "On May 21st, 1984, Dr. Lee paid $5.20 - 50% more!"
    assert sequence_to_text(text_to_sequence(raw, "project"), "project") == normalize(raw)
    assert sequence_to_text([PAD_ID, *text_to_sequence("ok", "project"), PAD_ID],
                            "project") == "ok"


def test_sequence_to_text_rejects_unknown_ids() -> None:
    with pytest.raises(ValueError, match="999"):
        sequence_to_text([999], "project")


@pytest.mark.parametrize("symbol_set", ["project", "nvidia"])
@pytest.mark.parametrize("raw", ["", "   ", "日本語", '"'])
def test_nothing_to_say_is_an_error_naming_the_text(raw: str, symbol_set: str) -> None:
    with pytest.raises(ValueError, match="has nothing left to say") as error:
        text_to_sequence(raw, symbol_set)
    assert repr(raw) in str(error.value)


# --- NVIDIA's table and english_cleaners ---------------------------------------------------

def test_nvidia_table_has_nvidias_148_symbols_in_its_order() -> None:
    assert len(NVIDIA.symbols) == 148
    assert NVIDIA.symbols[:12] == ("_", "-", "!", "'", "(", ")", ",", ".", ":", ";", "?", " ")
    assert NVIDIA.ids["A"] == 12 and NVIDIA.ids["Z"] == 37
    assert NVIDIA.ids["a"] == 38 and NVIDIA.ids["z"] == 63
    assert len(ARPABET) == 84
    assert NVIDIA.ids["@AA"] == 64 and NVIDIA.ids["@HH"] == 106 and NVIDIA.ids["@ZH"] == 147
    assert NVIDIA.eos is None and NVIDIA.ids["_"] == PAD_ID


def test_nvidia_ids_of_a_sentence_are_nvidias() -> None:
    # NVIDIA's text_to_sequence("Hello, World!", ["english_cleaners"]): no end-of-sentence id.
    assert text_to_sequence("Hello, World!", "nvidia") == [
        45, 42, 49, 49, 52, 6, 11, 60, 52, 55, 49, 41, 2]


def test_nvidia_reads_arpabet_in_curly_braces() -> None:
    ids = text_to_sequence("Say {HH AH0 L OW1} now.", "nvidia")
    hello = [NVIDIA.ids["@" + phone] for phone in ("HH", "AH0", "L", "OW1")]
    assert ids == [NVIDIA.ids[c] for c in "say "] + hello + [NVIDIA.ids[c] for c in " now."]
    assert sequence_to_text(ids, "nvidia") == "say {HH AH0 L OW1} now."


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        # NVIDIA's abbreviations, its spelling of "mrs." included; no others ("etc.", "i.e.").
        ("Mrs. Lee and Maj. Ng, i.e. both, etc.", "misess lee and major ng, i.e. both, etc."),
        ("Jones Jr.", "jones junior"),
        ("Café  \t naïve", "cafe naive"),
        ("Room 7, 21st of 1984.", "room seven, twenty-first of nineteen eighty-four."),
        ("  two  spaces ", " two spaces "),  # collapsed, not stripped, as NVIDIA's
    ],
)
def test_english_cleaners_behave_as_nvidias(raw: str, cleaned: str) -> None:
    assert english_cleaners(raw) == cleaned


def test_nvidia_drops_symbols_outside_its_table() -> None:
    # NVIDIA's _should_keep_symbol: a quote or an ampersand is dropped, not made a space.
    assert sequence_to_text(text_to_sequence('He said "hi" & left.', "nvidia"),
                            "nvidia") == "he said hi  left."
