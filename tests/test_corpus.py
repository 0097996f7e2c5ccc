import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.deadlines import scaled
from train.corpus import (
    HARD_SENTENCES,
    HELD_OUT,
    SAMPLE_RATE,
    Espeak,
    generate_corpus,
    generate_sentences,
    main,
    trim_silence,
)
from train.tacotron2.text import normalize

REPO_ROOT = Path(__file__).resolve().parents[1]
N_CLIPS = 5


def read_metadata(corpus: Path) -> list[list[str]]:
    lines = (corpus / "metadata.csv").read_text(encoding="utf-8").splitlines()
    return [line.split("|") for line in lines]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_corpus(tmp_path_factory.mktemp("corpus"), N_CLIPS, seed=0)


def test_metadata_rows_are_ljspeech_format(small_corpus: Path) -> None:
    rows = read_metadata(small_corpus)
    assert [row[0] for row in rows] == [f"DEMO-{i:04d}" for i in range(1, N_CLIPS + 1)]
    for clip_id, text, normalized in rows:
        assert text.strip() and normalized == normalize(text)
        assert (small_corpus / "wavs" / f"{clip_id}.wav").is_file()


def test_wavs_are_22050_hz_mono_16_bit(small_corpus: Path) -> None:
    for wav in sorted((small_corpus / "wavs").glob("*.wav")):
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")


def test_wavs_are_speech_of_plausible_length(small_corpus: Path) -> None:
    for clip_id, _, normalized in read_metadata(small_corpus):
        samples, _ = sf.read(small_corpus / "wavs" / f"{clip_id}.wav", dtype="float32")
        rms = float(np.sqrt(np.mean(samples**2)))
        seconds = len(samples) / SAMPLE_RATE
        assert rms > 0.02, f"{clip_id} is nearly silent (RMS {rms:.4f})"
        assert 0.5 < seconds < 5.0, f"{clip_id} lasts {seconds:.2f} s"
        # espeak-ng at 175 words per minute says about 60 ms of audio per written character.
        ms_per_char = 1000 * seconds / len(normalized)
        assert 35 < ms_per_char < 100, f"{clip_id}: {ms_per_char:.0f} ms per character"


def test_held_out_sentences_are_not_in_the_corpus_and_are_spoken(small_corpus: Path) -> None:
    held_out = [line.split("|") for line in
                (small_corpus / "heldout.csv").read_text(encoding="utf-8").splitlines()]
    corpus_texts = {text for _, text, _ in read_metadata(small_corpus)}
    assert [row[0] for row in held_out] == ["HELD-0001", "HELD-0002", "HELD-0003"]
    for clip_id, text, normalized in held_out:
        assert text not in corpus_texts and normalized == normalize(text)
        assert sf.info(small_corpus / "heldout" / f"{clip_id}.wav").duration > 0.5
    # The corpus itself is what it was before held-out sentences existed.
    assert [text for _, text, _ in read_metadata(small_corpus)] == generate_sentences(N_CLIPS)


def test_hard_sentences_are_written_after_and_apart_from_the_rest(small_corpus: Path,
                                                                 tmp_path: Path) -> None:
    hard = [line.split("|") for line in
            (small_corpus / "hard.csv").read_text(encoding="utf-8").splitlines()]
    assert [text for _, text, _ in hard] == list(HARD_SENTENCES)
    for clip_id, text, normalized in hard:
        assert normalized == normalize(text)
        assert sf.info(small_corpus / "hard" / f"{clip_id}.wav").duration > 2.0
    # Spoken last, so the corpus's and the held-out clips are what a corpus without them had.
    with Espeak() as speaker:
        *_, last = (speaker.synthesize(normalize(text))
                    for text in generate_sentences(N_CLIPS + HELD_OUT))
    recorded, _ = sf.read(small_corpus / "heldout" / "HELD-0003.wav", dtype="int16")
    np.testing.assert_array_equal(trim_silence(last), recorded)


def test_same_seed_gives_identical_files(small_corpus: Path, tmp_path: Path) -> None:
    again = generate_corpus(tmp_path / "again", N_CLIPS, seed=0)
    names = sorted(p.relative_to(small_corpus) for p in small_corpus.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in names:
        assert (small_corpus / name).read_bytes() == (again / name).read_bytes(), name


def test_espeak_restarts_from_the_same_state() -> None:
    # Inside one instance espeak-ng's carried-over state changes a repeated clip slightly.
    with Espeak() as speaker:
        first = speaker.synthesize("one two three")
        speaker.synthesize("something else")
    with Espeak() as speaker:
        again = speaker.synthesize("one two three")
    assert speaker.sample_rate == SAMPLE_RATE
    np.testing.assert_array_equal(first, again)


def test_espeak_allows_one_open_instance() -> None:
    with Espeak() as speaker, pytest.raises(RuntimeError, match="another Espeak is open"):
        Espeak()
    with pytest.raises(RuntimeError, match="closed"):
        speaker.synthesize("too late")


def test_different_seed_gives_different_sentences() -> None:
    assert set(generate_sentences(N_CLIPS, seed=0)).isdisjoint(generate_sentences(N_CLIPS, seed=1))


def test_sentences_are_short_distinct_and_exercise_the_front_end() -> None:
    sentences = generate_sentences(300, seed=0)
    assert len(set(sentences)) == 300
    assert all(3 <= len(s.split()) <= 9 for s in sentences)
    joined = " ".join(sentences)
    features = {
        "money": r"\$\d", "percentage": r"\d%", "time": r"\d:\d\d", "ordinal": r"\d(st|nd|rd|th)\b",
        "year": r"\b1[1-9]\d\d\b", "negative": r"-\d", "decimal": r"\d\.\d",
        "thousands": r"\d,\d{3}", "Dr.": r"\bDr\.", "Mr.": r"\bMr\.", "St.": r"\bSt\.",
        "question": r"\?", "exclamation": r"!", "quote": r'"', "comma": r",",
    }
    for feature, pattern in features.items():
        assert re.search(pattern, joined), feature


def test_cli_writes_a_corpus(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "train.corpus", "--out", str(out), "--n", "3"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=scaled(120),
    )
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    assert len(read_metadata(out)) == 3
    assert len(list((out / "wavs").glob("*.wav"))) == 3


def test_cli_reports_an_unwritable_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(blocker / "corpus"), "--n", "2"])
    assert exit_info.value.code == 1
    assert f"cannot write the corpus to {blocker / 'corpus'}" in capsys.readouterr().err


@pytest.mark.parametrize("n", ["0", "-3", "many"])
def test_cli_rejects_a_bad_count(n: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), "--n", n])
    assert exit_info.value.code == 2
    assert "argument --n" in capsys.readouterr().err


def test_generate_corpus_rejects_a_bad_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1, got 0"):
        generate_corpus(tmp_path, 0)
