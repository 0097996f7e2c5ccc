"""Does the model stop by itself? Stop-gate metrics from free-running decoding.

Teacher-forced validation cannot tell: there the decoder is fed the true frames and
the length is given. Here a few validation utterances are decoded from their text
alone, as at synthesis, with the decoder capped at :data:`MAX_LENGTH_RATIO` times
each batch's longest reference, so an untrained model that never stops costs little.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from train.tacotron2.data import Batch
from train.tacotron2.model import Tacotron2, evaluating

MAX_LENGTH_RATIO = 2.0  # decode at most this many times the reference length


def gate_stops(gate: torch.Tensor, n_frames_per_step: int,
               gate_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Which free-running utterances the gate ended (B,) and how many frames each spoke (B,).

    ``gate`` is (B, frames) from :meth:`Tacotron2.infer`; one that never fired spoke all
    its frames (the cap cut it off).
    """
    fired = torch.sigmoid(gate) > gate_threshold
    stopped = fired.any(dim=1)
    # The first firing frame opens the last step; the utterance ends with that step.
    last_step = fired.float().argmax(dim=1) // n_frames_per_step
    frames = torch.where(stopped, (last_step + 1) * n_frames_per_step,
                         torch.full_like(last_step, gate.size(1)))
    return stopped, frames


def format_stop_metric(value: float | None) -> str:
    """A stop metric for a log line: two decimals, or "-" when none was measured."""
    return "-" if value is None else f"{value:.2f}"


class StopMetrics(NamedTuple):
    stop_rate: float  # share of utterances whose gate fired before the cap
    length_ratio: float  # mean predicted / reference length (a cut-off one counts the cap)


@torch.no_grad()
def stop_metrics(model: Tacotron2, batch: Batch, n_utterances: int,
                 gate_threshold: float) -> StopMetrics:
    """Decode the first ``n_utterances`` of ``batch`` without teacher forcing."""
    texts = batch.text_padded[:n_utterances]
    input_lengths = batch.input_lengths[:n_utterances]
    reference = batch.output_lengths[:n_utterances].float()
    r = model.r
    cap = int(MAX_LENGTH_RATIO * float(reference.max()) / r) + 1
    with evaluating(model):
        gate = model.infer(texts[:, : int(input_lengths.max())], input_lengths,
                           max_steps=cap).gate

    stopped, predicted = gate_stops(gate, r, gate_threshold)
    ratio = (predicted.float() / reference).clamp(max=MAX_LENGTH_RATIO)
    return StopMetrics(stopped.float().mean().item(), ratio.mean().item())
