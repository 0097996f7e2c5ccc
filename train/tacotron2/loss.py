"""Tacotron2's training loss: mel reconstruction (before and after the postnet), stop gate,
and optionally guided attention."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.tacotron2.hparams import HParams
from train.tacotron2.model import Tacotron2Output, padding_mask


class LossTerms(NamedTuple):
    total: Tensor  # mel + gate + weighted guided attention: what is minimised
    mel: Tensor  # MSE of the decoder frames plus MSE of the postnet frames
    gate: Tensor  # BCE of the stop logits, one per decoder step
    guided_attention: Tensor  # the unweighted guided-attention loss (0 when it is off)

    @property
    def mel_and_gate(self) -> Tensor:
        """NVIDIA's loss: what train_loss and val_loss report, comparable across trials
        whatever their guided-attention weight."""
        return self.mel + self.gate


def guided_attention_mask(input_lengths: Tensor, output_lengths: Tensor,
                          n_frames_per_step: int, sigma: float,
                          size: tuple[int, int] | None = None) -> Tensor:
    """Tachibana et al. (2017)'s penalty ``1 - exp(-(n/N - t/T)^2 / (2 sigma^2))``.

    One (steps, tokens) map per utterance of the batch, built from its own text length
    ``N`` and decoder length ``T = ceil(frames / r)``, and zero on padded steps and
    tokens, so padding neither costs nor teaches anything. Returns (B, *size), by
    default (B, max T, max N).
    """
    steps = -(-output_lengths // n_frames_per_step)
    max_steps, max_tokens = size or (int(steps.max()), int(input_lengths.max()))
    t = torch.arange(max_steps, device=steps.device)[None, :, None] / steps[:, None, None]
    n = torch.arange(max_tokens, device=steps.device)[None, None, :] / input_lengths[:, None, None]
    mask = 1.0 - torch.exp(-((n - t) ** 2) / (2.0 * sigma ** 2))
    real = (~padding_mask(steps, max_steps))[:, :, None] & (~padding_mask(input_lengths,
                                                                          max_tokens))[:, None, :]
    return mask * real


class Tacotron2Loss(nn.Module):
    """NVIDIA's Tacotron2 loss, plus the guided-attention term when its weight is set.

    The stop gate is scored once per decoder step: with ``n_frames_per_step`` = r > 1
    the r frames of a step share one logit, so it learns "this step holds the last
    frame" rather than a target that changes within the step. ``gate_pos_weight`` > 1
    weighs the rare "stop" steps up.
    """

    def __init__(self, hp: HParams) -> None:
        super().__init__()
        self.r = hp.n_frames_per_step
        self.gate_pos_weight = hp.gate_pos_weight
        self.ga_weight = hp.guided_attention_weight
        self.ga_sigma = hp.guided_attention_sigma
        self.ga_fade_steps = hp.guided_attention_fade_steps

    def guided_attention_weight(self, step: int) -> float:
        """The term's weight at optimiser ``step``: linear fade to 0 over the fade steps."""
        if not self.ga_fade_steps:
            return self.ga_weight
        return self.ga_weight * max(0.0, 1.0 - step / self.ga_fade_steps)

    def forward(self, model_output: Tacotron2Output, mel_padded: Tensor, gate_padded: Tensor,
                input_lengths: Tensor, output_lengths: Tensor, step: int = 0) -> LossTerms:
        """``mel_padded`` (B, n_mel, T_out) and ``gate_padded`` (B, T_out) are the targets."""
        mel_target, gate_target = mel_padded.detach(), gate_padded.detach()
        mel_out, mel_out_postnet, gate_out, alignments = model_output
        mel = F.mse_loss(mel_out, mel_target) + F.mse_loss(mel_out_postnet, mel_target)
        # A step's logit is read on its first frame (real whenever the step is); its target
        # on its last frame, which is 1 when the step holds the utterance's last frame.
        gate = F.binary_cross_entropy_with_logits(
            gate_out[:, ::self.r], gate_target[:, self.r - 1::self.r],
            pos_weight=gate_out.new_tensor(self.gate_pos_weight))
        weight = self.guided_attention_weight(step)
        if weight > 0:
            mask = guided_attention_mask(input_lengths, output_lengths, self.r, self.ga_sigma,
                                         alignments.shape[1:])
            # Per decoder step, the share of attention outside the diagonal band, in [0, 1];
            # a mean over all cells (as ESPnet's) would shrink it by the text length.
            guided = (alignments.float() * mask).sum() / (-(-output_lengths // self.r)).sum()
        else:
            guided = mel.new_zeros(())
        return LossTerms(mel + gate + weight * guided, mel, gate, guided)
