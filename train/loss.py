"""Tacotron2's training loss: mel reconstruction (before and after the postnet) plus stop gate."""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from train.model import Tacotron2Output


class LossTerms(NamedTuple):
    total: Tensor  # mel + gate: what is minimised
    mel: Tensor  # MSE of the decoder frames plus MSE of the postnet frames
    gate: Tensor  # BCE of the stop logits


class Tacotron2Loss(nn.Module):
    """NVIDIA's Tacotron2 loss; ``gate_pos_weight`` > 1 weighs the rare "stop" frames up."""

    def __init__(self, gate_pos_weight: float = 1.0) -> None:
        super().__init__()
        if gate_pos_weight < 0:
            raise ValueError(f"gate_pos_weight={gate_pos_weight}: must be >= 0")
        self.gate_pos_weight = gate_pos_weight

    def forward(self, model_output: Tacotron2Output, mel_padded: Tensor,
                gate_padded: Tensor) -> LossTerms:
        """``mel_padded`` (B, n_mel, T_out) and ``gate_padded`` (B, T_out) are the targets."""
        mel_target, gate_target = mel_padded.detach(), gate_padded.detach()
        mel_out, mel_out_postnet, gate_out, _ = model_output
        mel = F.mse_loss(mel_out, mel_target) + F.mse_loss(mel_out_postnet, mel_target)
        gate = F.binary_cross_entropy_with_logits(
            gate_out, gate_target, pos_weight=gate_out.new_tensor(self.gate_pos_weight))
        return LossTerms(mel + gate, mel, gate)
