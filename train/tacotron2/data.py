"""The training data: which clips and texts, their features, and how they are batched.

A corpus is either an LJSpeech folder (``metadata.csv`` with ``id|text|normalized_text``
rows and ``wavs/<id>.wav``) or an NVIDIA-style filelist (``path|text`` per line, paths
relative to the filelist's folder). :func:`make_loaders` turns one into seeded
train/validation :class:`~torch.utils.data.DataLoader` s of :class:`Batch` es.

Log-mels are computed once per clip and cached as ``.npy`` files keyed by the clip
(path, size, modification time) and by every hyperparameter that shapes a mel, so a
changed clip or a changed ``hop_length`` never reuses a stale feature.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from train.tacotron2.atomic import atomic_path
from train.tacotron2.audio import AudioError, MelSpectrogram, load_wav, read_header
from train.tacotron2.hparams import MEL_HPARAMS, HParams
from train.tacotron2.symbols import PAD_ID
from train.tacotron2.text import text_to_sequence


class DataError(ValueError):
    """A corpus that cannot be read; the message names the file (and line)."""


class CacheWriteError(OSError):
    """A mel that cannot be cached (a full disk, a read-only folder); names the file.

    ``str()`` is one line: ``cannot write the mel cache file PATH: No space left on device``.
    """

    def __str__(self) -> str:
        if self.filename is None:  # rebuilt from its message (e.g. by a DataLoader worker)
            return super().__str__()
        return f"cannot write the mel cache file {self.filename}: {self.strerror}"


@dataclass(frozen=True, order=True)
class Utterance:
    audio_path: Path
    text: str


def read_utterances(source: Path) -> list[Utterance]:
    """The utterances of an LJSpeech folder or of a ``path|text`` filelist."""
    source = Path(source)
    if source.is_dir():
        utterances = _read_ljspeech(source)
    elif source.is_file():
        utterances = _read_filelist(source)
    else:
        raise DataError(f"{source}: no such corpus folder or filelist")
    if not utterances:
        raise DataError(f"{source}: the corpus holds no utterances")
    return utterances


def _lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of ``path`` with their 1-based line numbers."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a byte-order mark
    except UnicodeDecodeError as error:
        line = error.object[:error.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte "
                        f"{error.object[error.start:error.start + 1].hex(' ')} cannot be "
                        f"decoded; save the file as UTF-8)") from error
    return [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _read_ljspeech(folder: Path) -> list[Utterance]:
    metadata = folder / "metadata.csv"
    if not metadata.is_file():
        raise DataError(f"{metadata}: not found (an LJSpeech corpus folder holds "
                        f"metadata.csv and wavs/)")
    utterances = []
    # Split on '|' by hand: LJSpeech texts contain quotes that the csv module would eat.
    for number, line in _lines(metadata):
        fields = line.split("|")
        if len(fields) not in (2, 3) or not fields[0].strip():
            raise DataError(f"{metadata}:{number}: expected id|text|normalized_text, "
                            f"got {line!r}")
        clip_id, text = fields[0].strip(), fields[1]
        if len(fields) == 3 and fields[2].strip():
            text = fields[2]
        utterances.append(Utterance(folder / "wavs" / f"{clip_id}.wav", text.strip()))
    return utterances


def _read_filelist(filelist: Path) -> list[Utterance]:
    utterances = []
    for number, line in _lines(filelist):
        fields = line.split("|")
        if len(fields) != 2 or not fields[0].strip():
            raise DataError(f"{filelist}:{number}: expected path|text, got {line!r}")
        audio_path = Path(fields[0].strip())
        if not audio_path.is_absolute():
            audio_path = filelist.parent / audio_path
        utterances.append(Utterance(audio_path, fields[1].strip()))
    return utterances


def check_corpus(source: Path, hp: HParams) -> int:
    """Check the corpus at ``source`` for everything training refuses, without decoding
    audio: every line, every text, and every clip's header (present, mono, at
    ``hp.sampling_rate``, long enough). The number of utterances; a :class:`DataError`
    naming the first problems found otherwise.
    """
    utterances = read_utterances(source)
    dataset = TextMelDataset(utterances, hp)
    problems = []
    for utterance in utterances:
        try:
            dataset.text_ids(utterance)
            _check_length(utterance.audio_path,
                          read_header(utterance.audio_path, hp.sampling_rate), hp)
        except (DataError, AudioError) as error:
            problems.append(str(error))
    if problems:
        shown = "; ".join(problems[:3])
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise DataError(f"{len(problems)} of {len(utterances)} utterances cannot be used: "
                        f"{shown}{more}")
    return len(utterances)


def _check_length(audio_path: Path, samples: int, hp: HParams) -> None:
    # The STFT reflect-pads by filter_length / 2, which needs more samples than that.
    if samples <= hp.filter_length // 2:
        raise AudioError(f"{audio_path}: {samples} samples, too short for "
                         f"filter_length={hp.filter_length}")


def split_utterances(utterances: Sequence[Utterance], val_fraction: float,
                     seed: int) -> tuple[list[Utterance], list[Utterance]]:
    """(train, validation): a seeded shuffle of the sorted utterances, cut at ``val_fraction``.

    Validation gets at least one utterance when ``val_fraction > 0`` and there are two or
    more; training is never empty.
    """
    if not utterances:
        raise DataError("no utterances to split")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction}: must be in [0, 1)")
    # Sorting first makes the split independent of the order of the corpus listing.
    shuffled = sorted(utterances)
    random.Random(seed).shuffle(shuffled)
    if val_fraction == 0.0 or len(shuffled) < 2:
        return shuffled, []
    n_val = min(len(shuffled) - 1, max(1, round(len(shuffled) * val_fraction)))
    return shuffled[n_val:], shuffled[:n_val]


class TextMelDataset(Dataset):
    """Item ``i``: (text ids ``(T_in,)`` long, log-mel ``(n_mel, frames)`` float32)."""

    def __init__(self, utterances: Sequence[Utterance], hp: HParams,
                 cache_dir: Path | None = None) -> None:
        self.utterances = list(utterances)
        self.hp = hp
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.mel_spectrogram = MelSpectrogram(hp)

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        utterance = self.utterances[index]
        return self.text_ids(utterance), self.mel(utterance.audio_path)

    def check(self, progress: bool = False) -> None:
        """Read every item once (filling the cache); the first bad one raises, naming its file."""
        for index in tqdm(range(len(self)), desc="checking clips", unit="clip",
                          disable=not progress):
            self[index]

    def text_ids(self, utterance: Utterance) -> torch.Tensor:
        try:
            ids = text_to_sequence(utterance.text, self.hp.symbol_set)
            return torch.tensor(ids, dtype=torch.long)
        except ValueError as error:
            raise DataError(f"{utterance.audio_path}: text {utterance.text!r}: {error}") from error

    def mel(self, audio_path: Path) -> torch.Tensor:
        """The clip's log-mel, from the cache when a current one is there."""
        cached = self._cache_file(audio_path)
        if cached is not None and cached.is_file():
            return torch.from_numpy(np.load(cached))
        mel = self._compute_mel(audio_path)
        if cached is not None:
            try:
                _save_npy_atomically(cached, mel.numpy())
            except OSError as error:
                raise CacheWriteError(error.errno, error.strerror or str(error),
                                      str(cached)) from error
        return mel

    def _compute_mel(self, audio_path: Path) -> torch.Tensor:
        wav = load_wav(audio_path, self.hp.sampling_rate)
        _check_length(audio_path, len(wav), self.hp)
        with torch.no_grad():
            return self.mel_spectrogram(torch.from_numpy(wav))

    def _cache_file(self, audio_path: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        try:
            stat = audio_path.stat()
        except OSError:
            return None  # no cache for a missing clip; loading it names the file
        # Together with the clip, the settings that change a mel key the cache.
        settings = [f"{name}={getattr(self.hp, name)}" for name in MEL_HPARAMS]
        key = "|".join([str(audio_path.resolve()), str(stat.st_size), str(stat.st_mtime_ns),
                        *settings])
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        return self.cache_dir / f"{audio_path.stem}-{digest}.npy"


def _save_npy_atomically(path: Path, array: np.ndarray) -> None:
    # A crash or a parallel worker must never leave half a cached mel.
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        np.save(file, array)


class Batch(NamedTuple):
    """A padded batch, sorted by text length, longest first (for pack_padded_sequence)."""

    text_padded: torch.Tensor  # (B, T_in) long, PAD_ID after each text
    input_lengths: torch.Tensor  # (B,) long, descending
    mel_padded: torch.Tensor  # (B, n_mel, T_out) float, zeros after each mel
    gate_padded: torch.Tensor  # (B, T_out) float, 1 from each last real frame onward
    output_lengths: torch.Tensor  # (B,) long

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(*(tensor.to(device, non_blocking=non_blocking) for tensor in self))


class TextMelCollate:
    """Pads (text ids, mel) items into a :class:`Batch`, as NVIDIA's ``TextMelCollate``.

    ``T_out`` is rounded up to a multiple of ``n_frames_per_step``, since the decoder
    emits that many frames per step.
    """

    def __init__(self, n_frames_per_step: int) -> None:
        self.n_frames_per_step = n_frames_per_step

    def __call__(self, items: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
        text_lengths = torch.tensor([len(text) for text, _ in items], dtype=torch.long)
        input_lengths, order = torch.sort(text_lengths, descending=True, stable=True)
        n_mel = items[0][1].size(0)
        max_frames = max(mel.size(1) for _, mel in items)
        max_frames = -(-max_frames // self.n_frames_per_step) * self.n_frames_per_step

        batch_size = len(items)
        text_padded = torch.full((batch_size, int(input_lengths[0])), PAD_ID, dtype=torch.long)
        mel_padded = torch.zeros(batch_size, n_mel, max_frames)
        gate_padded = torch.zeros(batch_size, max_frames)
        output_lengths = torch.zeros(batch_size, dtype=torch.long)
        for row, index in enumerate(order.tolist()):
            text, mel = items[index]
            frames = mel.size(1)
            text_padded[row, :len(text)] = text
            mel_padded[row, :, :frames] = mel
            gate_padded[row, frames - 1:] = 1.0
            output_lengths[row] = frames
        return Batch(text_padded, input_lengths, mel_padded, gate_padded, output_lengths)


def make_loaders(hp: HParams, data: Path, cache_dir: Path | None
                 ) -> tuple[DataLoader, DataLoader, int, int]:
    """(train loader, validation loader, n_train, n_val) for the corpus at ``data``.

    The split follows ``hp.val_fraction`` and ``hp.split_seed``; training batches are
    shuffled by a generator seeded with ``hp.seed``. With ``n_val == 0`` the validation loader
    yields nothing. Call ``loader.dataset.check()`` to fail fast on a bad clip.
    """
    train_utterances, val_utterances = split_utterances(read_utterances(data),
                                                        hp.val_fraction, hp.split_seed)
    collate = TextMelCollate(hp.n_frames_per_step)
    train_loader = DataLoader(TextMelDataset(train_utterances, hp, cache_dir),
                              batch_size=hp.batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(hp.seed),
                              num_workers=hp.num_workers, collate_fn=collate, drop_last=False)
    val_loader = DataLoader(TextMelDataset(val_utterances, hp, cache_dir),
                            batch_size=hp.batch_size, shuffle=False,
                            num_workers=hp.num_workers, collate_fn=collate, drop_last=False)
    return train_loader, val_loader, len(train_utterances), len(val_utterances)
