"""Audio in and out, and the log-mel features the model predicts.

The features are NVIDIA's Tacotron2 features, computed the same way: a magnitude
STFT with a Hann window over the waveform reflect-padded by ``filter_length / 2``
on each side, projected onto librosa's Slaney mel basis, then
``log(clamp(mel, min=1e-5))`` (NVIDIA's ``dynamic_range_compression``). So a
``filter_length=1024, hop_length=256`` clip of ``N`` samples gives
``N // 256 + 1`` frames.

:func:`griffin_lim` turns such a log-mel back into a (rough) waveform, to listen
to what a model predicts without a neural vocoder; :class:`GriffinLim` is it as one of
the vocoders of :mod:`train.tacotron2.vocoder`.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch

from train.tacotron2.atomic import atomic_path
from train.tacotron2.hparams import HParams

# NVIDIA's floor before the log: keeps silence at log(1e-5) ≈ -11.5 instead of -inf.
LOG_FLOOR = 1e-5


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file."""


class NonFiniteAudio(ValueError):
    """A spectrogram (or the waveform made of it) holding NaN/inf or values too large to
    exponentiate: what a diverged model predicts. No audio can be made of it."""


def read_header(path: Path, sampling_rate: int) -> int:
    """The number of samples of a mono audio file, from its header: no sample is decoded.

    Refuses (with :class:`AudioError`) a missing, empty or unreadable file, a file
    at another sampling rate (resampling silently would hide a corpus mistake), a
    file with more than one channel and a file without samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except sf.SoundFileError as error:
        raise AudioError(f"{path}: unreadable audio file ({error})") from error
    if info.samplerate != sampling_rate:
        raise AudioError(f"{path}: sampled at {info.samplerate} Hz, expected "
                         f"{sampling_rate} Hz (resample the corpus or set "
                         f"sampling_rate={info.samplerate})")
    if info.channels != 1:
        raise AudioError(f"{path}: {info.channels} channels, expected mono")
    if info.frames == 0:
        raise AudioError(f"{path}: no samples")
    return info.frames


def load_wav(path: Path, sampling_rate: int) -> np.ndarray:
    """The samples of a mono audio file as float32 in [-1, 1]; refuses what
    :func:`read_header` refuses, and samples outside [-1, 1]."""
    read_header(path, sampling_rate)
    try:
        wav, _ = sf.read(path, dtype="float32")
    except sf.SoundFileError as error:
        raise AudioError(f"{path}: unreadable audio file ({error})") from error
    # Integer PCM is scaled into [-1, 1) by soundfile; a float file may hold anything.
    peak = float(np.abs(wav).max())
    if peak > 1.0:
        raise AudioError(f"{path}: samples reach {peak:.3g}, outside [-1, 1]")
    return wav


def save_wav(path: Path, wav: np.ndarray, sampling_rate: int) -> None:
    """Write ``wav`` (float in [-1, 1]) as 16-bit PCM, atomically; makes parent folders."""
    # Out-of-range floats would wrap around in the int16 conversion; clip them instead.
    samples = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0)
    with atomic_path(Path(path)) as tmp:
        sf.write(tmp, samples, sampling_rate, subtype="PCM_16", format="WAV")


class MelSpectrogram(torch.nn.Module):
    """Waveform (B, T) or (T,) in [-1, 1] -> log-mel (B, n_mel, frames) or (n_mel, frames)."""

    def __init__(self, hp: HParams) -> None:
        super().__init__()
        self.filter_length = hp.filter_length
        self.hop_length = hp.hop_length
        self.win_length = hp.win_length
        # Derived from hparams, so kept out of state_dict (persistent=False) but moved by .to().
        self.register_buffer("window", torch.hann_window(hp.win_length), persistent=False)
        basis = librosa.filters.mel(sr=hp.sampling_rate, n_fft=hp.filter_length,
                                    n_mels=hp.n_mel_channels, fmin=hp.mel_fmin, fmax=hp.mel_fmax)
        self.register_buffer("mel_basis", torch.from_numpy(basis), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(wav, n_fft=self.filter_length, hop_length=self.hop_length,
                              win_length=self.win_length, window=self.window, center=True,
                              pad_mode="reflect", return_complex=True)
        mel = torch.matmul(self.mel_basis, spectrum.abs())
        return torch.log(torch.clamp(mel, min=LOG_FLOOR))


def griffin_lim(log_mel: np.ndarray | torch.Tensor, hp: HParams, n_iter: int) -> np.ndarray:
    """A waveform (float32, peak 0.95) whose log-mel approximates ``log_mel`` (n_mel, frames).

    Raises :class:`NonFiniteAudio` (one line) when ``log_mel`` or the waveform made of it is
    not finite, as a diverged model's prediction is, instead of librosa's traceback.
    """
    if isinstance(log_mel, torch.Tensor):
        log_mel = log_mel.detach().float().cpu().numpy()
    # Overflows are expected of such a mel and said once below, not warned of by numpy.
    with np.errstate(all="ignore"):
        mel = np.exp(log_mel)
        if not np.isfinite(mel).all():
            raise NonFiniteAudio(not_finite_message(log_mel))
        # Non-negative least squares against the same Slaney basis the features were made with.
        magnitude = librosa.feature.inverse.mel_to_stft(
            mel, sr=hp.sampling_rate, n_fft=hp.filter_length, power=1.0,
            fmin=hp.mel_fmin, fmax=hp.mel_fmax)
        if not np.isfinite(magnitude).all():
            raise NonFiniteAudio(not_finite_message(log_mel))
        try:
            wav = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=hp.hop_length,
                                     win_length=hp.win_length, n_fft=hp.filter_length,
                                     window="hann", center=True, pad_mode="reflect",
                                     random_state=0)
        except librosa.ParameterError as error:  # "Audio buffer is not finite everywhere"
            raise NonFiniteAudio(not_finite_message(log_mel)) from error
    if not np.isfinite(wav).all():
        raise NonFiniteAudio(not_finite_message(log_mel))
    peak = float(np.abs(wav).max())
    if peak > 0:
        wav = wav * (0.95 / peak)
    return wav.astype(np.float32)


class GriffinLim:
    """The ``griffin_lim`` vocoder: :func:`griffin_lim` with ``hp.griffin_lim_iters``."""

    name = "griffin_lim"

    def __init__(self, hp: HParams) -> None:
        self.hp = hp

    def __call__(self, log_mel: np.ndarray | torch.Tensor) -> np.ndarray:
        return griffin_lim(log_mel, self.hp, n_iter=self.hp.griffin_lim_iters)


def not_finite_message(log_mel: np.ndarray) -> str:
    """Why no audio can be made of ``log_mel``, in one line."""
    finite = log_mel[np.isfinite(log_mel)]
    largest = f"; its largest finite value is {finite.max():.4g}" if finite.size else ""
    return (f"the predicted mel spectrogram is not finite or too large for audio "
            f"({np.size(log_mel) - finite.size} NaN/inf values{largest})")
