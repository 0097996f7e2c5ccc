"""Alignment-quality metrics computed at validation.

Tacotron2 only speaks once its attention has learned to walk monotonically along
the text; before that the loss can fall while the model babbles. These numbers
make that visible to a person and to the tuner's early-stopping rules.
"""

from __future__ import annotations

import torch


def focus_score(alignments: torch.Tensor, input_lengths: torch.Tensor,
                output_lengths: torch.Tensor, n_frames_per_step: int) -> float:
    """Mean over text tokens of the largest attention weight each token receives.

    ``alignments`` is (B, decoder_steps, text_len) with rows summing to 1. For
    each utterance only its real tokens and real decoder steps count (padding is
    cut off); each token's score is the maximum over decoder steps of its weight,
    and the result is the mean over all real tokens of the batch, in [0, 1].
    A sharp monotonic alignment scores near 1 (every token is, at some step, the
    focus of attention); a uniform, unaligned attention scores about
    1 / text_len. Tokens that are never attended pull the score down, so the
    score also catches skipped words.
    """
    maxima = []
    for b in range(alignments.size(0)):
        steps = -(-int(output_lengths[b]) // n_frames_per_step)  # ceil
        weights = alignments[b, :steps, : int(input_lengths[b])]
        maxima.append(weights.max(dim=0).values)
    return torch.cat(maxima).mean().item()


def gate_accuracy(gate_logits: torch.Tensor, gate_targets: torch.Tensor,
                  output_lengths: torch.Tensor) -> float:
    """Share of real (unpadded) frames whose stop/continue prediction is right.

    A frame predicts "stop" when sigmoid(logit) > 0.5; the target is 1 on the
    last real frame and 0 before it.
    """
    frames = torch.arange(gate_targets.size(1), device=gate_targets.device)
    real = frames[None, :] < output_lengths[:, None]
    correct = ((gate_logits > 0) == (gate_targets > 0.5)) & real
    return (correct.sum() / real.sum()).item()
