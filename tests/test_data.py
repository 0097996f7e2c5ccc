"""train.tacotron2.data: corpus reading, the split, cached mel features, batching and the
loaders."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

import train.tacotron2.data
from train.tacotron2.audio import AudioError
from train.tacotron2.data import (
    Batch,
    CacheWriteError,
    DataError,
    TextMelCollate,
    TextMelDataset,
    Utterance,
    make_loaders,
    read_utterances,
    split_utterances,
)
from train.tacotron2.hparams import HParams
from train.tacotron2.symbols import EOS_ID, PAD_ID

HP = HParams()


def write_clip(path: Path, seconds: float = 0.5, sampling_rate: int = HP.sampling_rate) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep = 0.5 * librosa.chirp(fmin=200, fmax=3000, duration=seconds, sr=sampling_rate)
    sf.write(path, sweep, sampling_rate, subtype="PCM_16")
    return path


# --- reading a corpus ----------------------------------------------------------------------

def test_read_ljspeech_folder_prefers_the_normalized_text(tmp_path) -> None:
    (tmp_path / "metadata.csv").write_text(
        'LJ001|Dr. Smith said "hi"|Doctor Smith said "hi"\n'
        "\n"
        "LJ002|Only raw text|\n"
        "LJ003|Two fields only\n", encoding="utf-8")

    utterances = read_utterances(tmp_path)

    assert utterances == [
        Utterance(tmp_path / "wavs" / "LJ001.wav", 'Doctor Smith said "hi"'),
        Utterance(tmp_path / "wavs" / "LJ002.wav", "Only raw text"),
        Utterance(tmp_path / "wavs" / "LJ003.wav", "Two fields only"),
    ]


def test_read_filelist_resolves_relative_paths_against_its_folder(tmp_path) -> None:
    absolute = tmp_path / "elsewhere" / "b.wav"
    filelist = tmp_path / "lists" / "train.txt"
    filelist.parent.mkdir()
    filelist.write_text(f"clips/a.wav|First line.\n\n{absolute}|Second line.\n")

    assert read_utterances(filelist) == [
        Utterance(tmp_path / "lists" / "clips" / "a.wav", "First line."),
        Utterance(absolute, "Second line."),
    ]


@pytest.mark.parametrize("name, content, where", [
    ("metadata.csv", "LJ001|a|a\nLJ002|b|b\nLJ003 no separator\n", r"metadata\.csv:3:"),
    ("metadata.csv", "LJ001|a|b|c\n", r"metadata\.csv:1:"),
    ("list.txt", "a.wav|one\n\nb.wav|two|extra\n", r"list\.txt:3:"),
    ("list.txt", "|no path\n", r"list\.txt:1:"),
])
def test_a_malformed_line_is_named_with_its_line_number(tmp_path, name, content, where) -> None:
    (tmp_path / name).write_text(content)
    source = tmp_path if name == "metadata.csv" else tmp_path / name
    with pytest.raises(DataError, match=where):
        read_utterances(source)


def test_missing_metadata_empty_corpus_and_missing_source_are_refused(tmp_path) -> None:
    with pytest.raises(DataError, match=r"metadata\.csv: not found"):
        read_utterances(tmp_path)
    (tmp_path / "metadata.csv").write_text("\n\n")
    with pytest.raises(DataError, match="no utterances"):
        read_utterances(tmp_path)
    with pytest.raises(DataError, match="nowhere"):
        read_utterances(tmp_path / "nowhere")


# --- the split -----------------------------------------------------------------------------

UTTERANCES = [Utterance(Path(f"wavs/{i:02d}.wav"), f"text {i}") for i in range(20)]


def test_split_is_seeded_and_independent_of_input_order() -> None:
    train, val = split_utterances(UTTERANCES, 0.1, seed=7)

    assert (len(train), len(val)) == (18, 2)
    assert sorted(train + val) == UTTERANCES
    assert split_utterances(list(reversed(UTTERANCES)), 0.1, seed=7) == (train, val)
    assert split_utterances(UTTERANCES, 0.1, seed=8) != (train, val)


@pytest.mark.parametrize("n, fraction, sizes", [
    (20, 0.01, (19, 1)),  # at least one validation utterance
    (2, 0.5, (1, 1)),
    (3, 0.9, (1, 2)),  # training never empty
    (1, 0.5, (1, 0)),  # one utterance: nothing to hold out
    (5, 0.0, (5, 0)),
])
def test_split_sizes(n, fraction, sizes) -> None:
    train, val = split_utterances(UTTERANCES[:n], fraction, seed=0)
    assert (len(train), len(val)) == sizes


# --- the dataset and its mel cache ---------------------------------------------------------

@pytest.fixture
def counted_loads(monkeypatch) -> list[Path]:
    """The paths train.tacotron2.data loads audio from, in order (to see cache hits and misses)."""
    loads: list[Path] = []
    real_load_wav = train.tacotron2.data.load_wav

    def load_wav(path: Path, sampling_rate: int) -> np.ndarray:
        loads.append(path)
        return real_load_wav(path, sampling_rate)

    monkeypatch.setattr(train.tacotron2.data, "load_wav", load_wav)
    return loads


def test_item_is_text_ids_and_a_mel(tmp_path) -> None:
    clip = write_clip(tmp_path / "a.wav", seconds=0.5)
    text_ids, mel = TextMelDataset([Utterance(clip, "Hello world.")], HP)[0]

    assert text_ids.dtype == torch.long and text_ids[-1] == EOS_ID and len(text_ids) > 5
    assert mel.dtype == torch.float32
    assert mel.shape == (HP.n_mel_channels, int(0.5 * HP.sampling_rate) // HP.hop_length + 1)


def test_mels_are_cached_per_clip_and_reused(tmp_path, counted_loads) -> None:
    clip = write_clip(tmp_path / "a.wav")
    cache = tmp_path / "cache"
    utterances = [Utterance(clip, "Hello.")]

    first = TextMelDataset(utterances, HP, cache)[0][1]
    second = TextMelDataset(utterances, HP, cache)[0][1]  # a new dataset, e.g. a new run

    assert counted_loads == [clip]
    assert [p.suffix for p in cache.iterdir()] == [".npy"]
    assert torch.equal(first, second)


def test_the_cache_is_invalidated_by_mel_hparams_and_by_a_changed_clip(
        tmp_path, counted_loads) -> None:
    clip = write_clip(tmp_path / "a.wav", seconds=0.5)
    cache = tmp_path / "cache"
    utterances = [Utterance(clip, "Hello.")]
    default_mel = TextMelDataset(utterances, HP, cache)[0][1]

    finer = dataclasses.replace(HP, hop_length=128)
    finer_mel = TextMelDataset(utterances, finer, cache)[0][1]
    assert finer_mel.shape[1] == int(0.5 * HP.sampling_rate) // 128 + 1
    assert default_mel.shape[1] != finer_mel.shape[1]

    write_clip(clip, seconds=0.3)
    os.utime(clip, ns=(1, 1))  # a different mtime even on a coarse-clock file system
    changed_mel = TextMelDataset(utterances, HP, cache)[0][1]
    assert changed_mel.shape[1] == int(0.3 * HP.sampling_rate) // HP.hop_length + 1

    assert counted_loads == [clip, clip, clip]
    assert len(list(cache.iterdir())) == 3


def test_without_a_cache_folder_nothing_is_written(tmp_path, counted_loads) -> None:
    clip = write_clip(tmp_path / "a.wav")
    dataset = TextMelDataset([Utterance(clip, "Hello.")], HP, cache_dir=None)
    dataset[0]
    dataset[0]
    assert counted_loads == [clip, clip]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


def test_a_cache_file_that_cannot_be_written_is_named(tmp_path, monkeypatch) -> None:
    clip = write_clip(tmp_path / "a.wav")
    cache = tmp_path / "cache"
    real_open = open

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):  # the cache's writes: ENOSPC
        return real_open("/dev/full", mode, *args, **kwargs) if "w" in mode else real_open(
            path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", open_on_a_full_disk)
    with pytest.raises(CacheWriteError) as error:
        TextMelDataset([Utterance(clip, "Hello.")], HP, cache)[0]
    assert re.fullmatch(rf"cannot write the mel cache file {re.escape(str(cache))}/a-\w+\.npy: "
                        r"No space left on device", str(error.value)), str(error.value)
    assert error.value.errno == errno.ENOSPC and list(cache.iterdir()) == []  # nothing torn


def test_check_fills_the_cache_and_names_the_first_bad_clip(tmp_path) -> None:
    good = write_clip(tmp_path / "good.wav")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF....WAVEnot really")
    cache = tmp_path / "cache"

    TextMelDataset([Utterance(good, "Fine.")], HP, cache).check()
    assert len(list(cache.iterdir())) == 1

    dataset = TextMelDataset([Utterance(good, "Fine."), Utterance(corrupt, "Broken.")], HP, cache)
    with pytest.raises(AudioError, match=r"corrupt\.wav"):
        dataset.check()


def test_a_too_short_clip_or_an_empty_text_is_named(tmp_path) -> None:
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(300, np.float32), HP.sampling_rate, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"short\.wav: 300 samples, too short"):
        TextMelDataset([Utterance(short, "Hi.")], HP)[0]

    clip = write_clip(tmp_path / "silent_text.wav")
    with pytest.raises(DataError, match=r"silent_text\.wav"):
        TextMelDataset([Utterance(clip, "")], HP)[0]


# --- batching ------------------------------------------------------------------------------

def test_collate_sorts_by_text_length_and_pads_to_a_multiple_of_r() -> None:
    n_mel = 3
    items = [  # text lengths 3, 5, 4; mel frames 7, 5, 9
        (torch.tensor([13, 14, EOS_ID]), torch.full((n_mel, 7), 1.0)),
        (torch.tensor([15, 16, 17, 18, EOS_ID]), torch.full((n_mel, 5), 2.0)),
        (torch.tensor([19, 20, 21, EOS_ID]), torch.full((n_mel, 9), 3.0)),
    ]

    batch = TextMelCollate(n_frames_per_step=2)(items)

    assert batch.input_lengths.tolist() == [5, 4, 3]
    assert batch.output_lengths.tolist() == [5, 9, 7]
    assert batch.text_padded.dtype == torch.long
    assert batch.text_padded.tolist() == [[15, 16, 17, 18, EOS_ID],
                                          [19, 20, 21, EOS_ID, PAD_ID],
                                          [13, 14, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.mel_padded.shape == (3, n_mel, 10)  # 9 frames rounded up to a multiple of 2
    assert batch.mel_padded[0, :, :5].eq(2.0).all() and batch.mel_padded[0, :, 5:].eq(0).all()
    assert batch.mel_padded[1, :, :9].eq(3.0).all()
    assert batch.gate_padded.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
                                          [0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
                                          [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]]
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.mel_padded, batch.mel_padded)


# --- the loaders ---------------------------------------------------------------------------

def test_the_training_seed_leaves_the_validation_split_alone(corpus, tmp_path) -> None:
    """Trials that differ only in ``seed`` are judged on the same clips; ``split_seed``
    alone moves the split."""
    def loaders(overrides: str) -> tuple[list, list]:
        hp = HParams.from_overrides(f"batch_size=4,val_fraction=0.2,{overrides}")
        train_loader, val_loader, _, _ = make_loaders(hp, corpus, tmp_path / "cache")
        return train_loader.dataset.utterances, val_loader.dataset.utterances

    train, val = loaders("seed=3")
    other_train, other_val = loaders("seed=4")
    assert other_val == val and sorted(other_train) == sorted(train)
    assert loaders("seed=3,split_seed=5")[1] != val


def test_make_loaders_splits_batches_and_repeats_with_the_seed(corpus, tmp_path) -> None:
    torch.set_num_threads(1)
    hp = HParams.from_overrides("batch_size=4,val_fraction=0.2,seed=3,n_frames_per_step=2")

    train_loader, val_loader, n_train, n_val = make_loaders(hp, corpus, tmp_path / "cache")

    assert (n_train, n_val) == (16, 4)
    train_batches = list(train_loader)
    assert [len(b.input_lengths) for b in train_batches] == [4, 4, 4, 4]
    assert all(b.mel_padded.shape[2] % 2 == 0 for b in train_batches)
    assert sum(len(b.input_lengths) for b in val_loader) == 4
    next_epoch = next(iter(train_loader)).text_padded
    assert not torch.equal(next_epoch, train_batches[0].text_padded)  # reshuffled each epoch

    again, _, _, _ = make_loaders(hp, corpus, tmp_path / "cache")
    assert torch.equal(next(iter(again)).text_padded, train_batches[0].text_padded)
