"""How well attention is aligned: the numbers the tuner prunes on.

Tacotron2 only speaks once its attention walks along the text: at each decoder step
it looks sharply at one place, that place moves forward without jumping or stalling,
and by the end every character has been read, once. Before that the loss can fall while
the model babbles, so these numbers, not the loss, say whether a trial is going anywhere.

For one utterance with attention ``A`` (``T`` decoder steps × ``N`` text tokens, each
row summing to 1), let ``p_t`` be the attended token (the row's argmax) and the *path*
``p_t`` with excursions of up to two steps smoothed out (a median over
:data:`SMOOTHING_STEPS` steps, which leaves a path that only moves forward as it is).
:func:`reading` follows the path: a token is *read* when the path lands on it or passes
over it by a steady forward move (at most :func:`max_jump` tokens), and *read again* when
the path comes back to it from more than :data:`REREAD_SLACK` tokens further on.

- **focus**: how much of each step's weight lies within :data:`FOCUS_RADIUS` tokens of
  ``p_t``, rescaled so that uniform attention scores 0 and a one-hot row 1; the mean
  over steps. A soft but correct alignment (a spread of about two tokens) still scores
  well, a diffuse one does not.
- **progress**: the share of steps at which ``p_t`` is where a steady reader would be
  (within :data:`DIAGONAL_BAND` of the text, as a fraction of its length, from
  ``t / T``), got there by a small forward move (back by at most one token, forward
  by at most :func:`max_jump` tokens) and is not re-reading. A reversed, jumping, stuck
  or "read it all at once, then stall" attention fails it.
- **coverage**: the text read exactly once: the share of tokens within one token of a
  read one and never read again, times a penalty for the faults, the tokens jumped over
  (not read, though the path went on past them) or read again, that reaches 0 when they
  make up :data:`LOST_TEXT_LIMIT` of the text. A listener has lost a sentence long
  before a third of it is missing or said twice, so skipping a third of the text, or
  reading half of it and starting again, fails; stuck attention fails it too. Text not
  reached by the end (early training's slow attention) costs only its share: it is
  what progress already measures.

``alignment_score`` is the product of the three, in [0, 1]: it is high only when the
attention is sharp, moves forward steadily and reads every token once. Which words were
skipped or repeated is :mod:`train.tacotron2.robustness`'s business.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

FOCUS_RADIUS = 2  # tokens each side of the attended one that still count as "in focus"
DIAGONAL_BAND = 0.2  # how far (as a share of the text) a step may lead or lag the diagonal
SMOOTHING_STEPS = 5  # median window of the path: excursions of up to two steps are noise
REREAD_SLACK = 2  # tokens the path may fall back behind its furthest point without re-reading
LOST_TEXT_LIMIT = 1 / 3  # share of the text jumped over or read again at which coverage is 0


class AlignmentMetrics(NamedTuple):
    focus: float
    progress: float
    coverage: float
    score: float  # focus × progress × coverage


class Reading(NamedTuple):
    """How one utterance's attention read its text."""

    read: torch.Tensor  # (N,) bool: the path landed on the token or passed over it steadily
    jumped: torch.Tensor  # (N,) bool: not read, though the path went on past it
    reread: torch.Tensor  # (N,) bool: read again after the path had moved on past it
    rereading: torch.Tensor  # (T,) bool: steps at which the path is back behind its furthest point


def max_jump(n_tokens: int, n_steps: int) -> float:
    """The largest forward move per decoder step that still counts as reading on.

    Three tokens, or three times the average pace when the decoder runs faster than
    one token per step (long texts with a large reduction factor).
    """
    return max(3.0, 3.0 * n_tokens / max(n_steps, 1))


def attention_path(weights: torch.Tensor) -> torch.Tensor:
    """The attended token of each step (T,), short excursions smoothed out (see the module)."""
    attended = weights.argmax(dim=1)
    half = SMOOTHING_STEPS // 2
    # Padded with the lowest of the first steps and the highest of the last: a path that
    # only moves forward keeps every step, and an excursion at either end is smoothed too.
    start = attended[:SMOOTHING_STEPS].min().repeat(half)
    end = attended[-SMOOTHING_STEPS:].max().repeat(half)
    padded = torch.cat([start, attended, end])
    return padded.unfold(0, SMOOTHING_STEPS, 1).median(dim=1).values


def reading(weights: torch.Tensor) -> Reading:
    """Which tokens the attention ``weights`` (T steps, N tokens) read, and read again."""
    n_steps, n_tokens = weights.shape
    path = attention_path(weights)
    rereading = path < torch.cummax(path, dim=0).values - REREAD_SLACK
    previous = torch.cat([path[:1], path[:-1]])
    steady = (path > previous) & (path - previous <= max_jump(n_tokens, n_steps))
    first = torch.where(steady, previous + 1, path)  # a steady move reads what it passes over
    tokens = torch.arange(n_tokens, device=weights.device)
    passed = (tokens[None, :] >= first[:, None]) & (tokens[None, :] <= path[:, None])  # (T, N)
    steps = torch.arange(n_steps, device=weights.device)
    first_read = torch.where(passed.any(dim=0), passed.int().argmax(dim=0), n_steps)
    # Only a token read before counts as read again: a path that jumped ahead and came
    # back reads the text it jumped over for the first time.
    again = passed & rereading[:, None] & (steps[:, None] > first_read[None, :])
    read = passed.any(dim=0)
    return Reading(read, ~read & (tokens < path.max()), again.any(dim=0), rereading)


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

    read = reading(weights)
    place = attended.float() / max(n_tokens - 1, 1)
    pace = torch.arange(n_steps, device=weights.device).float() / max(n_steps - 1, 1)
    on_diagonal = (place - pace).abs() <= DIAGONAL_BAND
    moves = torch.diff(attended.float(), prepend=attended[:1].float())
    steady = (moves >= -1) & (moves <= max_jump(n_tokens, n_steps)) & ~read.rereading

    near_read = read.read.clone()  # the token beside a read one counts: ends of the text
    near_read[1:] |= read.read[:-1]
    near_read[:-1] |= read.read[1:]
    once = (near_read & ~read.reread).float().mean().item()
    faults = ((read.jumped & ~near_read) | read.reread).float().mean().item()
    coverage = once * max(0.0, 1 - faults / LOST_TEXT_LIMIT)
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
