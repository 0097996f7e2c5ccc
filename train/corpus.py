"""A synthetic demo corpus in LJSpeech's layout, spoken by espeak-ng.

``python -m train.corpus --out DIR --n 100 [--seed 0]`` writes::

    DIR/metadata.csv        DEMO-0001|Dr. Lee paid $5.20.|doctor lee paid five dollars, ...
    DIR/wavs/DEMO-0001.wav  22050 Hz, mono, 16-bit PCM
    DIR/heldout.csv         HELD-0001|...  sentences that are not in the corpus, with
    DIR/heldout/HELD-0001.wav              their renderings: what a trained model should
                                           sound like (and last) on text it never saw
    DIR/hard.csv            HARD-0001|...  the fixed hard sentences (long ones, numbers,
    DIR/hard/HARD-0001.wav                 repeated words, lists) on which a model's
                                           attention skips or repeats words, if it does

(``id|text|normalized_text``, no header.) The sentences come from templates filled by a seeded
``random.Random``, so a given ``n`` and ``seed`` always give the same corpus, audio bytes
included. They are short (3-9 words, about 1-3 s) to keep CPU training affordable, and they
exercise the text front end: numbers, money, years, ordinals, abbreviations and punctuation.

espeak-ng speaks the normalised text, not the raw one: it reads "$5.20" as "dollar five point
two zero" and "1424" as "one thousand four hundred twenty four", so audio made from the raw
text would not match the transcript the model learns from.
"""

from __future__ import annotations

import argparse
import ctypes
import random
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path

import espeakng_loader
import librosa
import numpy as np
import soundfile as sf
from tqdm import tqdm

from train.arguments import positive_int, program_name
from train.tacotron2.text import normalize

SAMPLE_RATE = 22050
VOICE = "en-us"
WORDS_PER_MINUTE = 175  # espeak-ng's normal rate, pinned so clip lengths never drift
TRIM_TOP_DB = 40.0  # quieter than this below the peak counts as silence at the ends
TRIM_MARGIN_S = 0.05  # kept on each side so word onsets and releases are not clipped


def _unload(lib: ctypes.CDLL) -> None:
    """Unload a shared library loaded by ctypes, which has no way of its own to do it."""
    libc = ctypes.CDLL(None)
    libc.dlclose.argtypes = [ctypes.c_void_p]
    if libc.dlclose(lib._handle) != 0:
        raise OSError(f"could not unload {lib._name}")


class Espeak:
    """A small ctypes binding of espeak-ng's C API (``speak_lib.h``) that synthesises to memory.

    Use it as a context manager, one at a time::

        with Espeak() as speaker:
            samples = speaker.synthesize("hello")

    espeak-ng keeps state in C globals, and some (such as the phase of its pitch flutter) in
    function statics that ``espeak_Initialize`` never resets, so a clip's samples depend on
    everything spoken before it. Each instance therefore loads the library afresh and unloads
    it on exit: the same texts in the same order give the same samples in any process.
    """

    # Constants from speak_lib.h.
    _AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: PLAYBACK=0, RETRIEVAL=1, SYNCHRONOUS=2
    _INITIALIZE_DONT_EXIT = 0x8000  # without it a missing data folder calls exit() on Python
    _DEFAULT_BUFFER_MS = 0  # 0 = espeak-ng's default of 60 ms per callback
    _POS_CHARACTER = 1  # espeak_POSITION_TYPE
    _CHARS_UTF8 = 1
    _PARAMETER_RATE = 1  # espeak_PARAMETER.espeakRATE
    _EE_OK = 0  # espeak_ERROR

    # typedef int (t_espeak_callback)(short *wav, int numsamples, espeak_EVENT *events);
    # The events are not read, so an opaque pointer spares declaring espeak_EVENT.
    _SynthCallback = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
    )

    _in_use = False  # a second instance would share, and re-initialise, the same globals

    def __init__(self, voice: str = VOICE, words_per_minute: int = WORDS_PER_MINUTE) -> None:
        if Espeak._in_use:
            raise RuntimeError("another Espeak is open; espeak-ng allows one per process")
        self._lib = self._load_library()
        self._open = Espeak._in_use = True
        try:
            self._start(voice, words_per_minute)
        except BaseException:
            self.close()
            raise

    def _start(self, voice: str, words_per_minute: int) -> None:
        self._chunks: list[np.ndarray] = []
        data_path = espeakng_loader.get_data_path()
        self.sample_rate: int = self._lib.espeak_Initialize(
            self._AUDIO_OUTPUT_SYNCHRONOUS, self._DEFAULT_BUFFER_MS, data_path.encode(),
            self._INITIALIZE_DONT_EXIT,
        )
        # On failure espeak_Initialize returns -1, or 0 when its data files cannot be read.
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak-ng failed to start with its data folder {data_path}")
        # ctypes frees the C trampoline with the Python object; espeak-ng would then call
        # freed memory, so the instance keeps it alive.
        self._callback = self._SynthCallback(self._collect)
        self._lib.espeak_SetSynthCallback(self._callback)
        self._check(self._lib.espeak_SetVoiceByName(voice.encode()), f"selecting voice {voice!r}")
        self._check(
            self._lib.espeak_SetParameter(self._PARAMETER_RATE, words_per_minute, 0),
            f"setting the rate to {words_per_minute} words per minute",
        )

    @staticmethod
    def _load_library() -> ctypes.CDLL:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        # int espeak_Initialize(espeak_AUDIO_OUTPUT output, int buflength, const char *path,
        #                       int options);
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        # void espeak_SetSynthCallback(t_espeak_callback *SynthCallback);
        lib.espeak_SetSynthCallback.argtypes = [Espeak._SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        # espeak_ERROR espeak_SetVoiceByName(const char *name);
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        # espeak_ERROR espeak_SetParameter(espeak_PARAMETER parameter, int value, int relative);
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        # espeak_ERROR espeak_Synth(const void *text, size_t size, unsigned int position,
        #     espeak_POSITION_TYPE position_type, unsigned int end_position, unsigned int flags,
        #     unsigned int *unique_identifier, void *user_data);
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        # espeak_ERROR espeak_Synchronize(void);  espeak_ERROR espeak_Terminate(void);
        for name in ("espeak_Synchronize", "espeak_Terminate"):
            getattr(lib, name).argtypes = []
            getattr(lib, name).restype = ctypes.c_int
        return lib

    def close(self) -> None:
        """Stop espeak-ng and unload the library, so the next instance starts afresh."""
        if not self._open:
            return
        # Terminate first: it joins espeak-ng's worker thread, which must not outlive its code.
        self._lib.espeak_Terminate()
        _unload(self._lib)
        self._open = Espeak._in_use = False

    def __enter__(self) -> Espeak:
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()

    def _check(self, status: int, action: str) -> None:
        if status != self._EE_OK:
            raise RuntimeError(f"espeak-ng failed {action} (espeak_ERROR {status})")

    def _collect(self, wav: ctypes._Pointer, numsamples: int, _events: int | None) -> int:
        # A NULL buffer marks the end, and a buffer may be empty mid-way.
        if wav and numsamples > 0:
            # Copy: espeak-ng reuses the buffer for the next call.
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0  # 0 = go on synthesising

    def synthesize(self, text: str) -> np.ndarray:
        """The int16 samples of ``text`` spoken, at :attr:`sample_rate`."""
        if not self._open:
            raise RuntimeError("this Espeak is closed; its library is unloaded")
        self._chunks = []
        encoded = text.encode("utf-8")
        # In synchronous mode espeak_Synth returns once every callback has run; size counts
        # the terminating zero byte.
        status = self._lib.espeak_Synth(
            encoded, len(encoded) + 1, 0, self._POS_CHARACTER, 0, self._CHARS_UTF8, None, None
        )
        self._check(status, f"synthesising {text!r}")
        self._check(self._lib.espeak_Synchronize(), f"finishing {text!r}")
        if not self._chunks:
            raise RuntimeError(f"espeak-ng produced no audio for {text!r}")
        return np.concatenate(self._chunks)


def trim_silence(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``samples`` without leading and trailing silence, keeping a short margin."""
    _, (start, end) = librosa.effects.trim(samples.astype(np.float32) / 32768, top_db=TRIM_TOP_DB)
    margin = int(TRIM_MARGIN_S * sample_rate)
    return samples[max(0, start - margin):end + margin]


# ---------------------------------------------------------------------------------------------
# Sentences: templates whose {slots} are filled from word lists and number makers.
# ---------------------------------------------------------------------------------------------

_NAMES = ("Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack",
          "Laura", "Martin", "Nora", "Oscar", "Paula", "Ruth", "Sam", "Tina", "Victor", "Zoe")
_SURNAMES = ("Smith", "Brown", "Lee", "Walker", "Green", "Hall", "Young", "King", "Wright",
             "Lopez", "Hill", "Scott", "Adams", "Baker", "Nelson", "Carter")
_TITLES = ("Dr.", "Mr.", "Mrs.", "Prof.")
_SAINTS = ("Louis", "Paul", "Helena", "Andrews", "Petersburg", "Patrick", "Albans", "Ives")
_NOUNS = (("apple", "apples"), ("book", "books"), ("chair", "chairs"), ("lamp", "lamps"),
          ("bottle", "bottles"), ("ticket", "tickets"), ("candle", "candles"),
          ("garden", "gardens"), ("bridge", "bridges"), ("horse", "horses"),
          ("letter", "letters"), ("window", "windows"), ("basket", "baskets"),
          ("clock", "clocks"), ("box", "boxes"), ("knife", "knives"))
_ADJECTIVES = ("red", "quiet", "heavy", "bright", "strange", "tiny", "famous", "broken",
               "lovely", "cheap", "ancient", "clever", "noisy", "golden")
_PLACES = ("Boston", "Denver", "London", "Paris", "Chicago", "Dublin", "Seattle", "Madrid",
           "Toronto", "Berlin", "Oslo", "Houston")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_INTERJECTIONS = ("Hello", "Wait", "Look", "Listen", "Goodbye", "Careful", "Hurry")


def _with_ordinal_suffix(n: int) -> str:
    """``21`` -> ``"21st"``; 11, 12 and 13 take "th"."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _money(rng: random.Random) -> str:
    dollars = rng.randint(1, 20)
    return f"${dollars}" if rng.random() < 0.3 else f"${dollars}.{rng.randint(0, 99):02d}"


_SLOT_FILLERS: dict[str, Callable[[random.Random], str]] = {
    "name": lambda rng: rng.choice(_NAMES),
    "surname": lambda rng: rng.choice(_SURNAMES),
    "title": lambda rng: rng.choice(_TITLES),
    "saint": lambda rng: rng.choice(_SAINTS),
    "noun": lambda rng: rng.choice(_NOUNS)[0],
    "nouns": lambda rng: rng.choice(_NOUNS)[1],
    "adjective": lambda rng: rng.choice(_ADJECTIVES),
    "place": lambda rng: rng.choice(_PLACES),
    "month": lambda rng: rng.choice(_MONTHS),
    "weekday": lambda rng: rng.choice(_WEEKDAYS),
    "interjection": lambda rng: rng.choice(_INTERJECTIONS),
    "count": lambda rng: str(rng.randint(2, 12)),
    "big_number": lambda rng: f"{rng.randint(1_000, 9_999):,}",
    "money": _money,
    "year": lambda rng: str(rng.randint(1100, 2099)),
    "ordinal": lambda rng: _with_ordinal_suffix(rng.randint(1, 31)),
    "percent": lambda rng: f"{rng.randint(1, 99)}%",
    "decimal": lambda rng: f"{rng.randint(0, 20)}.{rng.randint(1, 9)}",
    "temperature": lambda rng: f"-{rng.randint(1, 30)}",
    "time": lambda rng: f"{rng.randint(1, 12)}:{rng.choice(('00', '05', '15', '30', '45'))}",
}

# Each template makes 3-9 words, counting a filled slot such as "$5.20" or "Dr." as one word.
TEMPLATES = (
    "{name} bought {count} {nouns} for {money}.",
    "Did {title} {surname} arrive on the {ordinal}?",
    "The old {noun} was built in {year}.",
    "{name} moved to St. {saint} in {year}.",
    "What a {adjective} {noun}!",
    '"{interjection}," said {name}.',
    "Prices rose by {percent} in {month}.",
    "Is the {noun} really {adjective}?",
    "{name} finished {ordinal} in the race!",
    "We need {count} {nouns}, not {count}.",
    "The {adjective} {noun} costs {money}.",
    "Meet me at {time} on {weekday}, {name}.",
    "It was {temperature} degrees in {place}.",
    "{name} walked {decimal} miles to {place}.",
    "The town has {big_number} people.",
    '"Where is the {noun}?" asked {title} {surname}.',
    "On {month} {ordinal}, {name} visited {place}.",
    "{name} paid {money} for lunch.",
    "Why did {name} sell the {adjective} {noun}?",
    "Call {title} {surname} before {time}, please.",
    "The {ordinal} {noun} was {adjective}.",
    "Stop, {name}! The {noun} is {adjective}.",
)

_DRAWS_PER_SENTENCE = 100  # give up on distinct sentences after this many tries each
HELD_OUT = 3  # sentences drawn after the corpus's own, kept out of it
# Where attention slips (FastSpeech's robustness test, in small): long sentences, runs of
# numbers, the same word again and again, lists. Spoken after everything else, so the
# corpus's and the held-out clips stay byte for byte what they were before these.
HARD_SENTENCES = (
    "When the ancient golden clock in the quiet town finally struck twelve, Anna, Ben and "
    "Clara walked slowly across the broken bridge towards the famous garden.",
    "On March 3rd, 1998, Dr. Lee paid $1,234.56 for 17 tickets and 2,500 candles.",
    "At 7:45 on Friday, prices rose by 12% to $19.99, then fell by 3.5% before 9:15.",
    "It was a very, very, very long day, and the bells rang and rang and rang again.",
    "She bought apples, books, chairs, lamps, bottles, tickets, candles, baskets, clocks "
    "and boxes.",
    "One, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve.",
)


def _fill(template: str, rng: random.Random) -> str:
    # Each slot occurrence gets its own draw, in reading order, so results depend on the seed only.
    parts = []
    for literal, slot, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        if slot is not None:
            parts.append(_SLOT_FILLERS[slot](rng))
    return "".join(parts)


def generate_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sentences, the same ones for the same ``n`` and ``seed``."""
    rng = random.Random(seed)
    sentences: dict[str, None] = {}  # an insertion-ordered set
    for _ in range(_DRAWS_PER_SENTENCE * n):
        if len(sentences) == n:
            break
        sentences[_fill(rng.choice(TEMPLATES), rng)] = None
    else:
        raise ValueError(f"the templates cannot make {n} distinct sentences")
    return list(sentences)


def generate_corpus(out: Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` clips and ``metadata.csv`` (and the held-out and hard sentences) into the
    folder ``out``; return ``out``."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    # The same draws as generate_sentences(n, seed), then HELD_OUT more: distinct from them.
    sentences = generate_sentences(n + HELD_OUT, seed)
    parts = {"metadata.csv": ("wavs", "DEMO", sentences[:n]),
             "heldout.csv": ("heldout", "HELD", sentences[n:]),
             "hard.csv": ("hard", "HARD", list(HARD_SENTENCES))}
    try:
        for folder, _, _ in parts.values():
            (out / folder).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot write the corpus to {out}: {err.strerror}") from err
    clips = len(sentences) + len(HARD_SENTENCES)
    with Espeak() as speaker, tqdm(total=clips, desc="synthesising", unit="clip") as bar:
        if speaker.sample_rate != SAMPLE_RATE:
            raise RuntimeError(f"espeak-ng speaks at {speaker.sample_rate} Hz, not {SAMPLE_RATE}")
        for table, (folder, prefix, texts) in parts.items():
            rows = []
            for number, text in enumerate(texts, 1):
                clip_id = f"{prefix}-{number:04d}"
                normalized = normalize(text)
                samples = trim_silence(speaker.synthesize(normalized))
                sf.write(out / folder / f"{clip_id}.wav", samples, SAMPLE_RATE, subtype="PCM_16")
                rows.append(f"{clip_id}|{text}|{normalized}\n")
                bar.update()
            (out / table).write_text("".join(rows), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=program_name("train.corpus"),
        description="Write a synthetic LJSpeech-format corpus spoken by espeak-ng.",
    )
    parser.add_argument("--out", type=Path, required=True, help="corpus folder to write")
    parser.add_argument("--n", type=positive_int, default=100, help="number of clips")
    parser.add_argument("--seed", type=int, default=0, help="sentence generator seed")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        out = generate_corpus(args.out, args.n, args.seed)
    except OSError as err:
        parser.exit(1, f"error: {err}\n")
    print(f"wrote {args.n} clips to {out} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
