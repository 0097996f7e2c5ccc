"""HiFi-GAN's generator (Kong et al., 2020), as defined in the original repository
(jik876/hifi-gan, ``models.py``), and the vocoder made of a trained one.

The network is built from a :class:`GeneratorConfig` (the repository's ``config.json``;
its V1 settings by default). Checkpoints in the repository's format (``{"generator":
state_dict}`` with weight-normed ``weight_g``/``weight_v`` tensors) are read by the
project's weights-only loader (:func:`train.tacotron2.checkpoint.read_checkpoint_file`),
so a crafted file is refused before any of it runs; weight normalisation is folded into
plain weights once loaded, as the repository does for inference.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.functional import leaky_relu
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from train.tacotron2.audio import NonFiniteAudio, not_finite_message
from train.tacotron2.checkpoint import CheckpointError, read_checkpoint_file
from train.tacotron2.hparams import HParams
from train.tacotron2.vocoder import (
    GeneratorConfig,
    VocoderError,
    feature_mismatch,
    mel_features,
    read_config,
)

LRELU_SLOPE = 0.1


def _padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


def _conv(channels_in: int, channels_out: int, kernel_size: int, dilation: int = 1) -> nn.Conv1d:
    return weight_norm(nn.Conv1d(channels_in, channels_out, kernel_size, dilation=dilation,
                                 padding=_padding(kernel_size, dilation)))


class ResBlock1(nn.Module):
    """Two dilated convolutions per dilation, with a residual each (V1 and V2)."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(_conv(channels, channels, kernel_size, d) for d in dilations)
        self.convs2 = nn.ModuleList(_conv(channels, channels, kernel_size) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2, strict=True):
            x = x + conv2(leaky_relu(conv1(leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class ResBlock2(nn.Module):
    """One dilated convolution per dilation, with a residual each (V3)."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv(channels, channels, kernel_size, d) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(leaky_relu(x, LRELU_SLOPE))
        return x


RESBLOCKS = {"1": ResBlock1, "2": ResBlock2}


class Generator(nn.Module):
    """Log-mel (B, num_mels, frames) -> waveform (B, 1, frames × prod(upsample_rates))."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        if config.resblock not in RESBLOCKS:
            raise VocoderError(f"HiFi-GAN config: resblock={config.resblock!r}, expected "
                               f"{' or '.join(map(repr, RESBLOCKS))}")
        self.num_kernels = len(config.resblock_kernel_sizes)
        channels = config.upsample_initial_channel
        self.conv_pre = weight_norm(nn.Conv1d(config.num_mels, channels, 7, padding=3))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for rate, kernel in zip(config.upsample_rates, config.upsample_kernel_sizes, strict=True):
            self.ups.append(weight_norm(nn.ConvTranspose1d(
                channels, channels // 2, kernel, rate, padding=(kernel - rate) // 2)))
            channels //= 2
            self.resblocks.extend(
                RESBLOCKS[config.resblock](channels, size, tuple(dilations))
                for size, dilations in zip(config.resblock_kernel_sizes,
                                           config.resblock_dilation_sizes, strict=True))
        self.conv_post = weight_norm(nn.Conv1d(channels, 1, 7, padding=3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        # The repository's last activation uses leaky_relu's default slope (0.01), not 0.1.
        return torch.tanh(self.conv_post(leaky_relu(x)))

    def fold_weight_norm(self) -> Generator:
        """Replace each weight-normed weight by the plain weight it stands for (inference)."""
        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return self


@functools.cache
def load_generator(checkpoint: Path, device: str) -> tuple[Generator, GeneratorConfig]:
    """The generator stored in ``checkpoint`` (repository format), in eval mode on
    ``device``, and its config; loaded once per process."""
    config, source = read_config(checkpoint)
    if math.prod(config.upsample_rates) != config.hop_size:
        raise VocoderError(f"{source}: upsample_rates {list(config.upsample_rates)} do not "
                           f"make its hop_size {config.hop_size}")
    try:
        state = read_checkpoint_file(checkpoint, map_location="cpu")
    except CheckpointError as error:
        raise VocoderError(str(error)) from None
    weights = state.get("generator") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise VocoderError(f"{checkpoint}: not a HiFi-GAN generator checkpoint (expected "
                           f"{{'generator': state_dict}})")
    generator = Generator(config)
    try:
        generator.load_state_dict(weights)  # weight_g/weight_v: torch's compatibility hook
    except RuntimeError as error:  # its first line says only "Error(s) in loading"
        detail = str(error).strip().splitlines()[1:2] or [str(error)]
        raise VocoderError(f"{checkpoint}: its weights do not fit the generator of {source} "
                           f"({detail[0].strip()[:200]})") from None
    return generator.fold_weight_norm().eval().to(device), config


class HiFiGAN:
    """A vocoder over a trained generator: log-mel (n_mel_channels, frames) -> waveform
    (float32, (frames - 1/2) × hop_length samples).

    HiFi-GAN is trained on frames without centring (the clip padded by (n_fft - hop) / 2):
    its frame ``i`` is centred half a hop later than this project's (centred at ``i × hop``),
    so the generator speaks each frame half a hop late. The first half hop is cut: on the
    demo corpus's clips, the mel of the copy-synthesised audio is then 0.31-0.33 from the
    clip's (mean |log-mel difference|), instead of 0.45-0.46 uncut.
    """

    def __init__(self, name: str, checkpoint: Path, hp: HParams, device: str) -> None:
        self.name = name
        self.generator, config = load_generator(checkpoint, device)
        self.device = device
        self.late = config.hop_size // 2  # samples: see the class's doc
        if differ := feature_mismatch(config, mel_features(hp)):
            raise VocoderError(f"vocoder {name}: made for other mel features than these "
                               f"hparams': {differ}; use vocoder=griffin_lim or a generator "
                               f"trained on these features")

    @torch.inference_mode()
    def __call__(self, log_mel: np.ndarray | torch.Tensor) -> np.ndarray:
        mel = torch.as_tensor(log_mel).detach().to(self.device, torch.float32)
        # As for Griffin-Lim: a log-mel whose magnitudes overflow is no mel of any audio
        # (a diverged model's), though the generator would still squash it into a waveform.
        if not torch.isfinite(mel.exp()).all():
            raise NonFiniteAudio(not_finite_message(mel.cpu().numpy()))
        wav = self.generator(mel.unsqueeze(0))
        return wav.reshape(-1)[self.late:].cpu().numpy()
