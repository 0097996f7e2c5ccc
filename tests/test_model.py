"""Tacotron2 and its loss on tiny models and random padded batches."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from train.tacotron2.hparams import HParams, HParamsError
from train.tacotron2.loss import Tacotron2Loss
from train.tacotron2.model import PADDED_GATE_LOGIT, Prenet, Tacotron2, Tacotron2Output
from train.tacotron2.symbols import PAD_ID

TINY = {
    "symbols_embedding_dim": 32, "encoder_embedding_dim": 32, "attention_rnn_dim": 32,
    "decoder_rnn_dim": 32, "prenet_dim": 16, "attention_dim": 16,
    "attention_location_n_filters": 4, "postnet_embedding_dim": 16, "n_mel_channels": 20,
}
TEXT_LENGTHS = [7, 5, 3]
TEXT_WIDTH = 8  # wider than the longest text: the padding must not leak into attention
MEL_LENGTHS = [12, 8, 5]
MEL_WIDTH = 12  # a multiple of every r tested


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0, **overrides: object) -> Tacotron2:
    torch.manual_seed(seed)
    return Tacotron2(HParams.from_overrides({**TINY, **overrides}))


def padded_batch(n_mel: int = 20, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """text (B, TEXT_WIDTH), text lengths, mel (B, n_mel, MEL_WIDTH), mel lengths, gate."""
    generator = torch.Generator().manual_seed(seed)
    text = torch.full((len(TEXT_LENGTHS), TEXT_WIDTH), PAD_ID)
    mel = torch.zeros(len(MEL_LENGTHS), n_mel, MEL_WIDTH)
    gate = torch.zeros(len(MEL_LENGTHS), MEL_WIDTH)
    for b, (n_text, n_mel_frames) in enumerate(zip(TEXT_LENGTHS, MEL_LENGTHS, strict=True)):
        text[b, :n_text] = torch.randint(2, 39, (n_text,), generator=generator)
        # Log-mel-like values: an offset plus a smooth pattern plus a little noise.
        frames = torch.arange(n_mel_frames).float()
        channels = torch.arange(n_mel).float().unsqueeze(1)
        mel[b, :, :n_mel_frames] = (-2.0 + torch.sin(frames / 3 + channels / 5)
                                    + 0.1 * torch.randn(n_mel, n_mel_frames, generator=generator))
        gate[b, n_mel_frames - 1:] = 1.0  # "stop" from the last real frame on, as NVIDIA pads
    return text, torch.tensor(TEXT_LENGTHS), mel, torch.tensor(MEL_LENGTHS), gate


def test_full_size_model_with_nvidias_symbols_has_nvidias_parameter_count() -> None:
    hp = HParams.from_overrides("symbol_set=nvidia")
    assert hp.n_symbols == 148  # follows the symbol set
    model = Tacotron2(hp)
    assert sum(p.numel() for p in model.parameters()) == 28_193_153


def test_n_symbols_must_match_the_symbol_set() -> None:
    with pytest.raises(HParamsError, match="n_symbols=39: symbol_set='nvidia' has 148 symbols"):
        HParams.from_overrides("symbol_set=nvidia,n_symbols=39")
    with pytest.raises(HParamsError, match="n_symbols=148: symbol_set='project' has 39"):
        HParams.from_overrides("n_symbols=148")
    resumed = HParams.from_overrides("symbol_set=nvidia")  # a checkpoint's, as the base
    assert HParams.from_overrides("learning_rate=1e-4", base=resumed).n_symbols == 148


@pytest.mark.parametrize("r", [1, 3])
def test_forward_shapes_and_masked_padding(r: int) -> None:
    model = tiny_model(n_frames_per_step=r)
    text, text_lengths, mel, mel_lengths, _ = padded_batch()
    out = model(text, text_lengths, mel, mel_lengths)

    assert out.mel.shape == out.mel_postnet.shape == (3, 20, MEL_WIDTH)
    assert out.gate.shape == (3, MEL_WIDTH)
    assert out.alignments.shape == (3, MEL_WIDTH // r, TEXT_WIDTH)
    for b, n in enumerate(MEL_LENGTHS):
        assert torch.all(out.mel[b, :, n:] == 0) and torch.all(out.mel_postnet[b, :, n:] == 0)
        assert torch.all(out.gate[b, n:] == PADDED_GATE_LOGIT)
        assert out.mel[b, :, :n].abs().sum() > 0 and torch.all(out.gate[b, :n].abs() < 100)


def test_alignments_are_distributions_over_the_real_text_only() -> None:
    text, text_lengths, mel, mel_lengths, _ = padded_batch()
    alignments = tiny_model()(text, text_lengths, mel, mel_lengths).alignments
    torch.testing.assert_close(alignments.sum(dim=2), torch.ones(3, MEL_WIDTH))
    for b, n in enumerate(TEXT_LENGTHS):
        assert torch.all(alignments[b, :, n:] == 0)
        assert torch.all(alignments[b, :, :n] > 0)


def test_each_decoder_step_gate_logit_covers_its_r_frames() -> None:
    model = tiny_model(n_frames_per_step=3, mask_padding=False)
    text, text_lengths, mel, mel_lengths, _ = padded_batch()
    gate = model(text, text_lengths, mel, mel_lengths).gate
    per_step = gate.view(3, MEL_WIDTH // 3, 3)
    assert torch.equal(per_step, per_step[:, :, :1].expand_as(per_step))
    assert not torch.equal(gate[:, 0], gate[:, 3])  # but steps differ


def test_teacher_forcing_feeds_the_last_frame_of_the_previous_step() -> None:
    # Eval mode without prenet dropout: the output is a function of the inputs alone.
    model = tiny_model(n_frames_per_step=3, p_prenet_dropout=0.0).eval()
    text, text_lengths, mel, mel_lengths, _ = padded_batch()
    reference = model(text, text_lengths, mel, mel_lengths).mel

    unread = mel.clone()
    unread[:, :, 0::3] += 1.0  # first and middle frames of every step, and the whole last step
    unread[:, :, 1::3] += 1.0
    unread[:, :, -1] += 1.0
    torch.testing.assert_close(model(text, text_lengths, unread, mel_lengths).mel, reference)

    read = mel.clone()
    read[:, :, 2] += 1.0  # the last frame of step 0, fed to step 1
    changed = model(text, text_lengths, read, mel_lengths).mel
    torch.testing.assert_close(changed[:, :, :3], reference[:, :, :3])
    assert not torch.allclose(changed[:, :, 3:6], reference[:, :, 3:6])


def test_mel_targets_must_fill_whole_decoder_steps() -> None:
    model = tiny_model(n_frames_per_step=5)
    text, text_lengths, mel, mel_lengths, _ = padded_batch()
    with pytest.raises(ValueError, match="n_frames_per_step=5"):
        model(text, text_lengths, mel, mel_lengths)


@pytest.mark.parametrize("r", [1, 3])
def test_loss_backward_reaches_every_parameter_with_finite_gradients(r: int) -> None:
    model = tiny_model(n_frames_per_step=r)
    text, text_lengths, mel, mel_lengths, gate = padded_batch()
    criterion = Tacotron2Loss(HParams(n_frames_per_step=r, guided_attention_weight=1.0))
    loss = criterion(model(text, text_lengths, mel, mel_lengths), mel, gate, text_lengths,
                     mel_lengths)
    loss.total.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_loss_terms() -> None:
    mel = torch.randn(2, 4, 6, requires_grad=True)
    gate_target = torch.ones(2, 6)
    gate_logits = torch.zeros(2, 6, requires_grad=True)
    perfect = Tacotron2Output(mel, mel, gate_logits, torch.empty(0))
    lengths = torch.tensor([6, 6])

    terms = Tacotron2Loss(HParams())(perfect, mel, gate_target, lengths, lengths)
    assert terms.mel.item() == 0.0 and terms.guided_attention.item() == 0.0
    torch.testing.assert_close(terms.gate, torch.log(torch.tensor(2.0)))  # BCE of logit 0
    torch.testing.assert_close(terms.total, terms.mel + terms.gate)

    weighted = Tacotron2Loss(HParams(gate_pos_weight=3.0))(perfect, mel, gate_target, lengths,
                                                          lengths)
    torch.testing.assert_close(weighted.gate, 3 * terms.gate)  # every target is "stop"

    # The loss pulls the outputs towards the targets, never the targets towards the outputs.
    off_by_one = Tacotron2Output(mel.detach() + 1, mel.detach() + 1, gate_logits, torch.empty(0))
    Tacotron2Loss(HParams())(off_by_one, mel, gate_target, lengths, lengths).total.backward()
    assert mel.grad is None and gate_logits.grad is not None


def _force_gate(model: Tacotron2, logit: float) -> None:
    nn.init.zeros_(model.decoder.gate_layer.weight)
    nn.init.constant_(model.decoder.gate_layer.bias, logit)


@pytest.mark.parametrize("r", [1, 3])
def test_infer_stops_at_max_decoder_steps_with_a_warning(
        r: int, caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_model(n_frames_per_step=r, max_decoder_steps=7).eval()
    _force_gate(model, -10.0)  # never "stop"
    text = padded_batch()[0][:1, :TEXT_LENGTHS[0]]
    with caplog.at_level(logging.WARNING, logger="train.tacotron2.model"):
        out = model.infer(text)
    assert out.mel.shape == out.mel_postnet.shape == (1, 20, 7 * r)
    assert out.gate.shape == (1, 7 * r)
    assert out.alignments.shape == (1, 7, TEXT_LENGTHS[0])
    assert "max_decoder_steps=7" in caplog.text


def test_infer_stops_when_the_gate_fires() -> None:
    model = tiny_model(n_frames_per_step=3).eval()
    _force_gate(model, 10.0)  # "stop" at once
    out = model.infer(padded_batch()[0][:1, :TEXT_LENGTHS[0]])
    assert out.mel.shape == (1, 20, 3) and out.alignments.shape == (1, 1, TEXT_LENGTHS[0])


def test_batched_infer_keeps_utterances_independent() -> None:
    # Without prenet dropout synthesis is deterministic; each utterance keeps its own
    # padding (the encoder convolutions see it, as in NVIDIA's model), so batch-mates
    # are the only difference.
    model = tiny_model(p_prenet_dropout=0.0, max_decoder_steps=6).eval()
    _force_gate(model, -10.0)
    text, text_lengths, *_ = padded_batch()
    batch = model.infer(text, text_lengths)
    for b in range(len(TEXT_LENGTHS)):
        alone = model.infer(text[b:b + 1], text_lengths[b:b + 1])
        torch.testing.assert_close(batch.mel_postnet[b:b + 1], alone.mel_postnet)
        torch.testing.assert_close(batch.alignments[b:b + 1], alone.alignments)


class ScriptedGate(nn.Module):
    """A gate layer that says "stop" for utterance b from decoder step ``stops[b]`` on."""

    def __init__(self, stops: list[int]) -> None:
        super().__init__()
        self.stops = torch.tensor(stops)
        self.steps = 0

    def forward(self, features: Tensor) -> Tensor:
        self.steps += 1
        return torch.where(self.steps >= self.stops, 10.0, -10.0).unsqueeze(1)


def test_batched_infer_runs_until_the_last_gate_and_blanks_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_model(n_frames_per_step=3, max_decoder_steps=10).eval()
    model.decoder.gate_layer = ScriptedGate([2, 4, 3])
    text, text_lengths, *_ = padded_batch()
    with caplog.at_level(logging.WARNING, logger="train.tacotron2.model"):
        out = model.infer(text, text_lengths)
    assert out.mel.shape == (3, 20, 4 * 3) and out.alignments.shape == (3, 4, TEXT_WIDTH)
    assert caplog.text == ""
    for b, frames in enumerate([6, 12, 9]):
        assert out.mel_postnet[b, :, :frames].abs().sum() > 0
        assert torch.all(out.mel[b, :, frames:] == 0)
        assert torch.all(out.mel_postnet[b, :, frames:] == 0)
        fired = torch.sigmoid(out.gate[b]) > 0.5
        assert fired.tolist() == [i >= frames - 3 for i in range(12)]


def test_prenet_dropout_stays_on_in_eval_mode() -> None:
    prenet = Prenet(20, [256, 256], dropout=0.5).eval()
    x = torch.ones(4, 20)
    torch.manual_seed(0)
    first, second = prenet(x), prenet(x)
    assert not torch.equal(first, second)
    zeros = (first == 0).float().mean().item()
    assert 0.5 <= zeros <= 0.9  # dropout's 50% plus the ReLU's own zeros

    model = tiny_model(max_decoder_steps=5).eval()
    _force_gate(model, -10.0)  # decode past step 0, whose zero "go" frame dropout cannot change
    text = padded_batch()[0][:1, :TEXT_LENGTHS[0]]
    runs = []
    for seed in (1, 2, 1):
        torch.manual_seed(seed)
        runs.append(model.infer(text).mel)
    assert not torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


def test_a_few_steps_overfit_one_batch() -> None:
    model = tiny_model()
    criterion = Tacotron2Loss(HParams())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    text, text_lengths, mel, mel_lengths, gate = padded_batch()
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = criterion(model(text, text_lengths, mel, mel_lengths), mel, gate, text_lengths,
                         mel_lengths).total
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
