"""train.tacotron2.audio: loading and saving clips, NVIDIA's log-mel features, Griffin-Lim
inversion."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from train.tacotron2.audio import AudioError, MelSpectrogram, griffin_lim, load_wav, save_wav
from train.tacotron2.hparams import HParams

HP = HParams()  # NVIDIA's audio settings: 22050 Hz, filter 1024, hop 256, 80 mels up to 8 kHz


def chirp(seconds: float, sampling_rate: int = HP.sampling_rate) -> np.ndarray:
    """A 0.5-amplitude sweep from 200 Hz to 3 kHz: energy across many mel bands."""
    sweep = librosa.chirp(fmin=200, fmax=3000, duration=seconds, sr=sampling_rate)
    return (0.5 * sweep).astype(np.float32)


# --- MelSpectrogram ------------------------------------------------------------------------

@pytest.mark.parametrize("n_samples", [11025, 11100])
def test_mel_shape_single_and_batch(n_samples: int) -> None:
    mel = MelSpectrogram(HP)
    wav = torch.from_numpy(chirp(1.0)[:n_samples])
    frames = n_samples // HP.hop_length + 1
    assert mel(wav).shape == (HP.n_mel_channels, frames)
    assert mel(torch.stack([wav, -wav])).shape == (2, HP.n_mel_channels, frames)


def test_mel_matches_direct_librosa_computation() -> None:
    wav = chirp(0.7)
    magnitude = np.abs(librosa.stft(wav, n_fft=HP.filter_length, hop_length=HP.hop_length,
                                    win_length=HP.win_length, window="hann", center=True,
                                    pad_mode="reflect"))
    basis = librosa.filters.mel(sr=HP.sampling_rate, n_fft=HP.filter_length,
                                n_mels=HP.n_mel_channels, fmin=HP.mel_fmin, fmax=HP.mel_fmax)
    expected = np.log(np.maximum(basis @ magnitude, 1e-5))

    actual = MelSpectrogram(HP)(torch.from_numpy(wav)).numpy()

    assert actual.shape == expected.shape
    # Compared as energies: near the floor, float32 rounding is large in the log domain.
    np.testing.assert_allclose(np.exp(actual), np.exp(expected), rtol=1e-4, atol=1e-6)
    assert actual.min() >= np.log(1e-5) - 1e-6


def test_mel_of_silence_is_the_log_floor() -> None:
    mel = MelSpectrogram(HP)(torch.zeros(4096))
    assert torch.allclose(mel, torch.full_like(mel, np.log(1e-5)))


def test_mel_buffers_follow_the_module_and_stay_out_of_the_state_dict() -> None:
    mel = MelSpectrogram(HP).double()
    assert {name for name, _ in mel.named_buffers()} == {"window", "mel_basis"}
    assert mel(torch.from_numpy(chirp(0.2)).double()).dtype == torch.float64
    assert mel.state_dict() == {}


# --- Griffin-Lim ---------------------------------------------------------------------------

def test_griffin_lim_round_trip_resembles_the_input() -> None:
    log_mel = MelSpectrogram(HP)(torch.from_numpy(chirp(1.0)))  # a tensor is accepted too
    frames = log_mel.shape[1]

    wav = griffin_lim(log_mel, HP, n_iter=16)

    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - (frames - 1) * HP.hop_length) <= HP.hop_length
    assert np.abs(wav).max() == pytest.approx(0.95, abs=1e-3)
    again = MelSpectrogram(HP)(torch.from_numpy(wav)).numpy()[:, :frames]
    original = log_mel.numpy()[:, : again.shape[1]]
    correlation = np.corrcoef(original.ravel(), again.ravel())[0, 1]
    assert correlation > 0.8


# --- load_wav ------------------------------------------------------------------------------

def test_load_wav_reads_int16_as_float_in_unit_range(tmp_path) -> None:
    path = tmp_path / "clip.wav"
    sf.write(path, chirp(0.3), HP.sampling_rate, subtype="PCM_16")

    wav = load_wav(path, HP.sampling_rate)

    assert wav.dtype == np.float32 and wav.shape == (int(0.3 * HP.sampling_rate),)
    np.testing.assert_allclose(wav, chirp(0.3), atol=1 / 32768)


def _missing(folder: Path) -> Path:
    return folder / "absent.wav"


def _zero_bytes(folder: Path) -> Path:
    path = folder / "zero.wav"
    path.write_bytes(b"")
    return path


def _random_bytes(folder: Path) -> Path:
    path = folder / "noise.wav"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    return path


def _header_only(folder: Path) -> Path:
    path = folder / "header.wav"
    sf.write(path, np.zeros(0, np.float32), HP.sampling_rate)
    return path


def _stereo(folder: Path) -> Path:
    path = folder / "stereo.wav"
    sf.write(path, np.zeros((800, 2), np.float32), HP.sampling_rate)
    return path


def _float_beyond_one(folder: Path) -> Path:
    path = folder / "loud.wav"
    sf.write(path, np.full(800, 1.5, np.float32), HP.sampling_rate, subtype="FLOAT")
    return path


@pytest.mark.parametrize("make_bad_file, reason", [
    (_missing, "no such audio file"),
    (_zero_bytes, "empty file"),
    (_random_bytes, "unreadable"),
    (_header_only, "no samples"),
    (_stereo, "2 channels"),
    (_float_beyond_one, r"outside \[-1, 1\]"),
])
def test_load_wav_refuses_bad_files_naming_them(tmp_path, make_bad_file, reason) -> None:
    path = make_bad_file(tmp_path)
    with pytest.raises(AudioError, match=reason) as caught:
        load_wav(path, HP.sampling_rate)
    assert path.name in str(caught.value)


def test_load_wav_refuses_another_sampling_rate_naming_both(tmp_path) -> None:
    path = tmp_path / "clip16k.wav"
    sf.write(path, chirp(0.2, 16000), 16000, subtype="PCM_16")
    with pytest.raises(AudioError) as caught:
        load_wav(path, 22050)
    message = str(caught.value)
    assert "clip16k.wav" in message and "16000" in message and "22050" in message


# --- save_wav ------------------------------------------------------------------------------

def test_save_wav_writes_16_bit_pcm_atomically_into_new_folders(tmp_path) -> None:
    path = tmp_path / "deep" / "er" / "out.wav"
    wav = chirp(0.2)
    wav[:10] = 1.7  # out of range: clipped, not wrapped around

    save_wav(path, wav, HP.sampling_rate)

    info = sf.info(path)
    assert (info.subtype, info.samplerate, info.channels) == ("PCM_16", HP.sampling_rate, 1)
    back = load_wav(path, HP.sampling_rate)
    assert back[:10].min() > 0.99
    np.testing.assert_allclose(back[10:], wav[10:], atol=1 / 32768)
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]  # no temp file left
