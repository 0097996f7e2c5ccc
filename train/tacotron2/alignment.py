"""How well attention is aligned: the numbers the tuner prunes on.

Tacotron2 only speaks once its attention walks along the text: at each decoder step
it looks sharply at one place, that place moves forward without jumping or stalling,
and by the end every character has been read. Before that the loss can fall while the
model babbles, so these numbers, not the loss, say whether a trial is going anywhere.

For one utterance with attention ``A`` (``T`` decoder steps × ``N`` text tokens, each
row summing to 1), let ``p_t`` be the attended token (the row's argmax):

- **focus**: how much of each step's weight lies within :data:`FOCUS_RADIUS` tokens of
  ``p_t``, rescaled so that uniform attention scores 0 and a one-hot row 1; the mean
  over steps. A soft but correct alignment (a spread of about two tokens) still scores
  well, a diffuse one does not.
- **progress**: the share of steps at which ``p_t`` is where a steady reader would be
  (within :data:`DIAGONAL_BAND` of the text, as a fraction of its length, from
  ``t / T``) and got there by a small forward move (back by at most one token, forward
  by at most :func:`max_jump` tokens). A reversed, jumping, stuck or "read it all at
  once, then stall" attention fails it.
- **coverage**: the share of tokens that ``p_t`` comes within one token of at some step.
  Skipped words and attention stuck on one place fail it.

``alignment_score`` is the product of the three, in [0, 1]: it is high only when the
attention is sharp, moves forward steadily and reads every token.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

FOCUS_RADIUS = 2  # tokens each side of the attended one that still count as "in focus"
DIAGONAL_BAND = 0.2  # how far (as a share of the text) a step may lead or lag the diagonal


class AlignmentMetrics(NamedTuple):
    focus: float
    progress: float
    coverage: float
    score: float  # focus × progress × coverage


def max_jump(n_tokens: int, n_steps: int) -> float:
    """The largest forward move per decoder step that still counts as reading on.

    Three tokens, or three times the average pace when the decoder runs faster than
    one token per step (long texts with a large reduction factor).
    """
    return max(3.0, 3.0 * n_tokens / max(n_steps, 1))


def utterance_alignment(weights: torch.Tensor) -> AlignmentMetrics:
    """The metrics of one utterance's real attention, ``weights`` (T steps, N tokens)."""
    n_steps, n_tokens = weights.shape
    weights = weights.float()
    attended = weights.argmax(dim=1)  # p_t

    tokens = torch.arange(n_tokens, device=weights.device)
    near = (tokens[None, :] - attended[:, None]).abs() <= FOCUS_RADIUS
    in_focus = (weights * near).sum(dim=1)
    uniform_share = near.sum(dim=1).float() / n_tokens  # what a uniform row would put there
    focus = ((in_focus - uniform_share) / (1 - uniform_share).clamp_min(1e-6)).clamp(0, 1)
    focus = torch.where(uniform_share >= 1, torch.ones_like(focus), focus)  # tiny texts

    place = attended.float() / max(n_tokens - 1, 1)
    pace = torch.arange(n_steps, device=weights.device).float() / max(n_steps - 1, 1)
    on_diagonal = (place - pace).abs() <= DIAGONAL_BAND
    moves = torch.diff(attended.float(), prepend=attended[:1].float())
    steady = (moves >= -1) & (moves <= max_jump(n_tokens, n_steps))

    distance = (tokens[:, None] - attended[None, :]).abs().min(dim=1).values
    coverage = (distance <= 1).float().mean().item()
    focus, progress = focus.mean().item(), (on_diagonal & steady).float().mean().item()
    return AlignmentMetrics(focus, progress, coverage, focus * progress * coverage)


def batch_alignment(alignments: torch.Tensor, input_lengths: torch.Tensor,
                    output_lengths: torch.Tensor, n_frames_per_step: int) -> list[AlignmentMetrics]:
    """Per-utterance metrics of a padded batch of ``alignments`` (B, steps, text_len).

    Only each utterance's real tokens and real decoder steps (``ceil(frames / r)``) count.
    """
    metrics = []
    for b in range(alignments.size(0)):
        steps = -(-int(output_lengths[b]) // n_frames_per_step)
        metrics.append(utterance_alignment(alignments[b, :steps, : int(input_lengths[b])]))
    return metrics


def mean_alignment(metrics: list[AlignmentMetrics]) -> AlignmentMetrics:
    """The mean of several utterances' metrics (the score is the mean of their scores)."""
    return AlignmentMetrics(*(sum(values) / len(values) for values in zip(*metrics, strict=True)))
