"""Tacotron2 (Shen et al. 2018): characters in, mel-spectrogram frames out.

The modules follow the paper's diagram and NVIDIA's reference ``model.py``::

    text ids ─▶ Embedding ─▶ Encoder (3 convs + BiLSTM) ─▶ memory
                                                             │
    previous frame ─▶ Prenet ─▶ attention LSTM ─▶ location-sensitive Attention
                                        │                    │ context
                                        └──▶ decoder LSTM ◀──┘
                                                  │
                              frame projection (r frames) + gate ("stop") logit
                                                  │
                              Postnet (5 convs) adds a residual to the frames

Every size comes from :class:`train.tacotron2.hparams.HParams`; at the defaults (and
NVIDIA's 148 symbols) the model has NVIDIA's 28,193,153 parameters.

With ``n_frames_per_step`` = r > 1 each decoder step emits r frames; the prenet
still reads a single frame, the last of the previous step, as in the Tacotron paper.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from train.tacotron2.hparams import HParams

logger = logging.getLogger(__name__)

# Dropout of the encoder and postnet convolutions: fixed in the paper, not a hyperparameter.
CONV_DROPOUT = 0.5
# Gate logit written into padded frames: sigmoid(1e3) = 1 means "already stopped", and
# it costs no BCE against the padded gate target of 1.
PADDED_GATE_LOGIT = 1e3


class Tacotron2Output(NamedTuple):
    mel: Tensor  # decoder frames (B, n_mel, T_out)
    mel_postnet: Tensor  # decoder frames plus the postnet residual (B, n_mel, T_out)
    gate: Tensor  # stop logits, one per frame (B, T_out)
    alignments: Tensor  # attention weights per decoder step (B, T_out / r, T_in)


def padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B, max_len) booleans, True at positions at or beyond each sequence's length."""
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) >= lengths.unsqueeze(1)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class LinearNorm(nn.Linear):
    """A linear layer with Xavier-uniform weights scaled for the activation that follows."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True,
                 w_init_gain: str = "linear") -> None:
        super().__init__(in_dim, out_dim, bias=bias)
        nn.init.xavier_uniform_(self.weight, gain=nn.init.calculate_gain(w_init_gain))


class ConvNorm(nn.Conv1d):
    """A 'same'-padded 1-D convolution with Xavier-uniform weights (odd kernel sizes)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 bias: bool = True, w_init_gain: str = "linear") -> None:
        super().__init__(in_channels, out_channels, kernel_size,
                         padding=(kernel_size - 1) // 2, bias=bias)
        nn.init.xavier_uniform_(self.weight, gain=nn.init.calculate_gain(w_init_gain))


class Prenet(nn.Module):
    """Two ReLU layers whose dropout stays on at inference too.

    The paper keeps it on so that synthesis is not a deterministic function of the
    previous frame, which is what lets the decoder recover from its own mistakes.
    """

    def __init__(self, in_dim: int, sizes: list[int], dropout: float) -> None:
        super().__init__()
        in_sizes = [in_dim, *sizes[:-1]]
        self.layers = nn.ModuleList(
            LinearNorm(n_in, n_out, bias=False) for n_in, n_out in zip(in_sizes, sizes, strict=True)
        )
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        for linear in self.layers:
            x = F.dropout(F.relu(linear(x)), p=self.dropout, training=True)
        return x


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int,
             w_init_gain: str) -> nn.Sequential:
    return nn.Sequential(
        ConvNorm(in_channels, out_channels, kernel_size, w_init_gain=w_init_gain),
        nn.BatchNorm1d(out_channels),
    )


class Postnet(nn.Module):
    """Convolutions predicting a residual that refines the decoder's mel frames."""

    def __init__(self, hp: HParams) -> None:
        super().__init__()
        n_mel, dim, k = hp.n_mel_channels, hp.postnet_embedding_dim, hp.postnet_kernel_size
        channels = [n_mel] + [dim] * (hp.postnet_n_convolutions - 1) + [n_mel]
        gains = ["tanh"] * (hp.postnet_n_convolutions - 1) + ["linear"]
        self.convolutions = nn.ModuleList(
            _conv_bn(n_in, n_out, k, gain)
            for n_in, n_out, gain in zip(channels[:-1], channels[1:], gains, strict=True)
        )

    def forward(self, mel: Tensor) -> Tensor:
        x = mel
        last = len(self.convolutions) - 1
        for i, conv in enumerate(self.convolutions):
            x = conv(x)
            if i < last:  # the last layer is linear: the residual may be negative
                x = torch.tanh(x)
            x = F.dropout(x, CONV_DROPOUT, self.training)
        return x


class Encoder(nn.Module):
    """Convolutions over the character embeddings, then a bidirectional LSTM."""

    def __init__(self, hp: HParams) -> None:
        super().__init__()
        dim = hp.encoder_embedding_dim
        self.convolutions = nn.ModuleList(
            _conv_bn(hp.symbols_embedding_dim if i == 0 else dim, dim,
                     hp.encoder_kernel_size, "relu")
            for i in range(hp.encoder_n_convolutions)
        )
        self.lstm = nn.LSTM(dim, dim // 2, num_layers=1, batch_first=True, bidirectional=True)

    def forward(self, embedded: Tensor, lengths: Tensor) -> Tensor:
        """(B, emb_dim, T_in) embeddings -> (B, T_in, encoder_embedding_dim) memory."""
        x = embedded
        # As in NVIDIA's model the convolutions also read the padding near a text's end;
        # only the LSTM below is length-aware.
        for conv in self.convolutions:
            x = F.dropout(F.relu(conv(x)), CONV_DROPOUT, self.training)
        # Packing keeps the backward LSTM from reading padding into the real positions.
        packed = pack_padded_sequence(x.transpose(1, 2), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        outputs, _ = self.lstm(packed)
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=x.size(2))
        return memory


class LocationLayer(nn.Module):
    """Features of where attention was (previous and cumulative weights)."""

    def __init__(self, n_filters: int, kernel_size: int, attention_dim: int) -> None:
        super().__init__()
        self.conv = ConvNorm(2, n_filters, kernel_size, bias=False)
        self.dense = LinearNorm(n_filters, attention_dim, bias=False, w_init_gain="tanh")

    def forward(self, weights_cat: Tensor) -> Tensor:
        """(B, 2, T_in) -> (B, T_in, attention_dim)."""
        return self.dense(self.conv(weights_cat).transpose(1, 2))


class Attention(nn.Module):
    """Location-sensitive attention: e = v^T tanh(W q + V m + U f), softmax over the text."""

    def __init__(self, hp: HParams) -> None:
        super().__init__()
        self.query_layer = LinearNorm(hp.attention_rnn_dim, hp.attention_dim, bias=False,
                                      w_init_gain="tanh")
        self.memory_layer = LinearNorm(hp.encoder_embedding_dim, hp.attention_dim, bias=False,
                                       w_init_gain="tanh")
        self.v = LinearNorm(hp.attention_dim, 1, bias=False)
        self.location_layer = LocationLayer(hp.attention_location_n_filters,
                                            hp.attention_location_kernel_size, hp.attention_dim)

    def forward(self, query: Tensor, memory: Tensor, processed_memory: Tensor,
                weights_cat: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The context vector (B, encoder_dim) and the new weights (B, T_in).

        ``processed_memory`` is ``memory_layer(memory)``, computed once per utterance;
        ``mask`` is True on padded text positions, which get zero weight.
        """
        energies = self.v(torch.tanh(
            self.query_layer(query).unsqueeze(1)
            + self.location_layer(weights_cat)
            + processed_memory
        )).squeeze(2)
        weights = torch.softmax(energies.masked_fill(mask, -math.inf), dim=1)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)
        return context, weights


@dataclass
class DecoderState:
    """What the decoder carries from one step to the next, for one batch."""

    memory: Tensor  # encoder outputs (B, T_in, encoder_dim)
    processed_memory: Tensor  # memory projected for attention (B, T_in, attention_dim)
    mask: Tensor  # True on padded text positions (B, T_in)
    attention_hidden: Tensor
    attention_cell: Tensor
    decoder_hidden: Tensor
    decoder_cell: Tensor
    attention_weights: Tensor  # (B, T_in)
    attention_weights_cum: Tensor  # (B, T_in)
    attention_context: Tensor  # (B, encoder_dim)


class Decoder(nn.Module):
    """Autoregressive decoder: one step reads one frame and emits r frames and a gate logit."""

    def __init__(self, hp: HParams) -> None:
        super().__init__()
        self.n_mel = hp.n_mel_channels
        self.r = hp.n_frames_per_step
        self.p_attention_dropout = hp.p_attention_dropout
        self.p_decoder_dropout = hp.p_decoder_dropout
        self.max_decoder_steps = hp.max_decoder_steps
        self.gate_threshold = hp.gate_threshold
        enc = hp.encoder_embedding_dim

        self.prenet = Prenet(self.n_mel, [hp.prenet_dim, hp.prenet_dim], hp.p_prenet_dropout)
        self.attention_rnn = nn.LSTMCell(hp.prenet_dim + enc, hp.attention_rnn_dim)
        self.attention = Attention(hp)
        self.decoder_rnn = nn.LSTMCell(hp.attention_rnn_dim + enc, hp.decoder_rnn_dim)
        self.frame_projection = LinearNorm(hp.decoder_rnn_dim + enc, self.n_mel * self.r)
        self.gate_layer = LinearNorm(hp.decoder_rnn_dim + enc, 1, w_init_gain="sigmoid")

    def initial_state(self, memory: Tensor, memory_lengths: Tensor) -> DecoderState:
        batch, text_len, _ = memory.shape
        attention_rnn_dim = self.attention_rnn.hidden_size
        decoder_rnn_dim = self.decoder_rnn.hidden_size
        return DecoderState(
            memory=memory,
            processed_memory=self.attention.memory_layer(memory),
            mask=padding_mask(memory_lengths.to(memory.device), text_len),
            attention_hidden=memory.new_zeros(batch, attention_rnn_dim),
            attention_cell=memory.new_zeros(batch, attention_rnn_dim),
            decoder_hidden=memory.new_zeros(batch, decoder_rnn_dim),
            decoder_cell=memory.new_zeros(batch, decoder_rnn_dim),
            attention_weights=memory.new_zeros(batch, text_len),
            attention_weights_cum=memory.new_zeros(batch, text_len),
            attention_context=memory.new_zeros(batch, memory.size(2)),
        )

    def step(self, prenet_out: Tensor, s: DecoderState) -> tuple[Tensor, Tensor, Tensor]:
        """Advance ``s`` by one step: r frames (B, n_mel*r), gate (B, 1), weights (B, T_in)."""
        s.attention_hidden, s.attention_cell = self.attention_rnn(
            torch.cat([prenet_out, s.attention_context], dim=1),
            (s.attention_hidden, s.attention_cell))
        s.attention_hidden = F.dropout(s.attention_hidden, self.p_attention_dropout,
                                       self.training)

        weights_cat = torch.stack([s.attention_weights, s.attention_weights_cum], dim=1)
        s.attention_context, s.attention_weights = self.attention(
            s.attention_hidden, s.memory, s.processed_memory, weights_cat, s.mask)
        s.attention_weights_cum = s.attention_weights_cum + s.attention_weights

        s.decoder_hidden, s.decoder_cell = self.decoder_rnn(
            torch.cat([s.attention_hidden, s.attention_context], dim=1),
            (s.decoder_hidden, s.decoder_cell))
        s.decoder_hidden = F.dropout(s.decoder_hidden, self.p_decoder_dropout, self.training)

        features = torch.cat([s.decoder_hidden, s.attention_context], dim=1)
        return self.frame_projection(features), self.gate_layer(features), s.attention_weights

    def forward(self, memory: Tensor, mel_targets: Tensor,
                memory_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher-forced decoding of ``mel_targets`` (B, n_mel, T_out), T_out a multiple of r.

        Returns mel (B, n_mel, T_out), gate logits (B, T_out), alignments (B, T_out/r, T_in).
        """
        if mel_targets.size(2) % self.r:
            raise ValueError(f"mel_padded has {mel_targets.size(2)} frames: must be a multiple "
                             f"of n_frames_per_step={self.r}")
        # Step t reads the last target frame of step t-1; step 0 reads a zero "go" frame.
        last_frames = mel_targets[:, :, self.r - 1::self.r]
        go_frame = last_frames.new_zeros(last_frames.size(0), self.n_mel, 1)
        inputs = torch.cat([go_frame, last_frames[:, :, :-1]], dim=2).permute(2, 0, 1)
        prenet_out = self.prenet(inputs)  # (steps, B, prenet_dim)

        state = self.initial_state(memory, memory_lengths)
        outputs = [self.step(frame, state) for frame in prenet_out]
        return self._to_frame_rate(outputs)

    def infer(self, memory: Tensor, memory_lengths: Tensor, max_steps: int | None = None
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Free-running decoding until every utterance's gate fires or the step cap.

        The cap is ``max_steps`` when given (at most ``max_decoder_steps``). Returns mel,
        gate, alignments as :meth:`forward`, plus the number of decoder steps each
        utterance took (B,); later frames of an utterance are meaningless.
        """
        cap = min(max_steps or self.max_decoder_steps, self.max_decoder_steps)
        batch = memory.size(0)
        state = self.initial_state(memory, memory_lengths)
        frame = memory.new_zeros(batch, self.n_mel)  # the "go" frame
        n_steps = torch.full((batch,), cap, dtype=torch.long, device=memory.device)
        stopped = torch.zeros(batch, dtype=torch.bool, device=memory.device)
        outputs = []
        for step in range(cap):
            frames, gate, weights = self.step(self.prenet(frame), state)
            outputs.append((frames, gate, weights))
            fires = torch.sigmoid(gate.squeeze(1)) > self.gate_threshold
            n_steps[fires & ~stopped] = step + 1
            stopped |= fires
            if bool(stopped.all()):
                break
            frame = frames[:, -self.n_mel:]  # the last of this step's r frames
        if not bool(stopped.all()) and cap == self.max_decoder_steps:
            logger.warning("decoding hit max_decoder_steps=%d before the gate fired "
                           "(%d of %d utterances); the output is cut off",
                           cap, int((~stopped).sum()), batch)
        return (*self._to_frame_rate(outputs), n_steps)

    def _to_frame_rate(self, outputs: list[tuple[Tensor, Tensor, Tensor]]
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-step outputs -> mel (B, n_mel, steps*r), gate (B, steps*r), alignments."""
        frames, gates, weights = zip(*outputs, strict=True)
        batch, steps = frames[0].size(0), len(frames)
        mel = torch.stack(frames, dim=1).view(batch, steps * self.r, self.n_mel).transpose(1, 2)
        gate = torch.cat(gates, dim=1).repeat_interleave(self.r, dim=1)
        return mel, gate, torch.stack(weights, dim=1)


class Tacotron2(nn.Module):
    """The whole model: text ids in, mel frames, stop logits and alignments out."""

    def __init__(self, hp: HParams) -> None:
        super().__init__()
        self.mask_padding = hp.mask_padding
        self.r = hp.n_frames_per_step
        self.embedding = nn.Embedding(hp.n_symbols, hp.symbols_embedding_dim)
        # NVIDIA's init: uniform with the standard deviation of Xavier initialisation.
        std = math.sqrt(2.0 / (hp.n_symbols + hp.symbols_embedding_dim))
        bound = math.sqrt(3.0) * std
        nn.init.uniform_(self.embedding.weight, -bound, bound)
        self.encoder = Encoder(hp)
        self.decoder = Decoder(hp)
        self.postnet = Postnet(hp)

    def forward(self, text_padded: Tensor, input_lengths: Tensor, mel_padded: Tensor,
                output_lengths: Tensor) -> Tacotron2Output:
        """Teacher-forced pass over a padded batch.

        ``text_padded`` (B, T_in) ids, ``mel_padded`` (B, n_mel, T_out) with T_out a
        multiple of n_frames_per_step; lengths (B,) are the unpadded sizes.
        """
        memory = self.encoder(self.embedding(text_padded).transpose(1, 2), input_lengths)
        mel, gate, alignments = self.decoder(memory, mel_padded, input_lengths)
        padding = padding_mask(output_lengths.to(mel.device), mel.size(2))
        return self._with_postnet(mel, gate, alignments, padding if self.mask_padding else None)

    @torch.no_grad()
    def infer(self, text_ids: Tensor, input_lengths: Tensor | None = None,
              max_steps: int | None = None) -> Tacotron2Output:
        """Synthesise from ``text_ids`` (B, T_in); call ``model.eval()`` first.

        ``input_lengths`` defaults to the full width (right for B=1). In a batch, an
        utterance's frames after its gate fired are zero, and its gate logits there
        are large, so ``sigmoid(gate) > gate_threshold`` marks where each one ends.
        ``max_steps`` caps the decoder below ``max_decoder_steps`` (see
        :meth:`Decoder.infer`).
        """
        if input_lengths is None:
            input_lengths = torch.full((text_ids.size(0),), text_ids.size(1), dtype=torch.long)
        memory = self.encoder(self.embedding(text_ids).transpose(1, 2), input_lengths)
        mel, gate, alignments, n_steps = self.decoder.infer(memory, input_lengths, max_steps)
        padding = padding_mask(n_steps * self.r, mel.size(2))
        # Blank the frames after each utterance's stop before the postnet convolves over them.
        mel = mel.masked_fill(padding.unsqueeze(1), 0.0)
        return self._with_postnet(mel, gate, alignments, padding)

    def _with_postnet(self, mel: Tensor, gate: Tensor, alignments: Tensor,
                      padding: Tensor | None) -> Tacotron2Output:
        """Add the postnet residual; where ``padding`` is True, zero the frames and
        set the gate to "stopped"."""
        mel_postnet = mel + self.postnet(mel)
        if padding is not None:
            frames = padding.unsqueeze(1)
            mel = mel.masked_fill(frames, 0.0)
            mel_postnet = mel_postnet.masked_fill(frames, 0.0)
            gate = gate.masked_fill(padding, PADDED_GATE_LOGIT)
        return Tacotron2Output(mel, mel_postnet, gate, alignments)
