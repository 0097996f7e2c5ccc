"""The alignment metrics on synthetic attention matrices, the guided-attention mask, the
per-step stop gate and the free-running stop metrics."""

from __future__ import annotations

import pytest
import torch

from train.tacotron2.alignment import batch_alignment, mean_alignment, reading, utterance_alignment
from train.tacotron2.data import Batch
from train.tacotron2.free_running import MAX_LENGTH_RATIO, stop_metrics
from train.tacotron2.hparams import HParams
from train.tacotron2.loss import Tacotron2Loss, guided_attention_mask
from train.tacotron2.model import Tacotron2, Tacotron2Output

STEPS, TOKENS = 200, 40
_t = torch.arange(STEPS).float()
DIAGONAL = _t * (TOKENS - 1) / (STEPS - 1)


def sharp(positions: torch.Tensor) -> torch.Tensor:
    """One-hot attention on ``positions`` (one token per decoder step)."""
    weights = torch.zeros(STEPS, TOKENS)
    weights[torch.arange(STEPS), positions.round().long().clamp(0, TOKENS - 1)] = 1.0
    return weights


def soft(centres: torch.Tensor, spread: float) -> torch.Tensor:
    """A Gaussian of ``spread`` tokens around each step's centre, normalised per step."""
    tokens = torch.arange(TOKENS).float()
    weights = torch.exp(-((tokens[None, :] - centres[:, None]) ** 2) / (2 * spread ** 2))
    return weights / weights.sum(dim=1, keepdim=True)


WRONG_PATTERNS = {
    "uniform": torch.full((STEPS, TOKENS), 1 / TOKENS),
    "stuck on one token": sharp(torch.full((STEPS,), 5.0)),
    "reversed diagonal": sharp(TOKENS - 1 - DIAGONAL),
    "random sharp jumps": sharp(torch.randint(0, TOKENS, (STEPS,),
                                              generator=torch.Generator().manual_seed(0)).float()),
    "sweep in 40 steps, then stuck": sharp(_t.clamp(max=TOKENS - 1)),
}


def test_an_ideal_diagonal_scores_at_least_0_95():
    assert utterance_alignment(sharp(DIAGONAL)).score >= 0.95


@pytest.mark.parametrize("name", WRONG_PATTERNS)
def test_wrong_patterns_score_at_most_0_3(name):
    assert utterance_alignment(WRONG_PATTERNS[name]).score <= 0.3


def test_a_correct_soft_diagonal_scores_at_least_0_6_and_above_every_wrong_sharp_pattern():
    score = utterance_alignment(soft(DIAGONAL, spread=2.0)).score
    assert score >= 0.6
    assert all(score > utterance_alignment(w).score for w in WRONG_PATTERNS.values())


def test_each_component_catches_its_own_failure():
    uniform = utterance_alignment(WRONG_PATTERNS["uniform"])
    stuck = utterance_alignment(WRONG_PATTERNS["stuck on one token"])
    jumps = utterance_alignment(WRONG_PATTERNS["random sharp jumps"])
    assert uniform.focus == 0.0  # diffuse
    assert stuck.coverage < 0.1  # most of the text never read
    assert jumps.focus == 1.0 and jumps.progress < 0.1  # sharp, but in no order


# Tacotron's classic failures: the attention goes back and reads again, or jumps over words.
_FIRST_PASS = STEPS // 3
REREAD_HALF_THEN_ALL = torch.where(  # reads half the text, returns to the start, reads it all
    _t < _FIRST_PASS, _t * (TOKENS / 2 - 1) / (_FIRST_PASS - 1),
    (_t - _FIRST_PASS) * (TOKENS - 1) / (STEPS - _FIRST_PASS - 1))
_KEPT = torch.cat([torch.arange(0, 13), torch.arange(13 + TOKENS // 3, TOKENS)]).float()
SKIP_A_THIRD = _KEPT[(_t * (len(_KEPT) - 1) / (STEPS - 1)).round().long()]  # steady otherwise


@pytest.mark.parametrize("path", [REREAD_HALF_THEN_ALL, SKIP_A_THIRD], ids=["reread", "skip"])
def test_attention_that_rereads_or_skips_fails_sharp_or_soft(path):
    assert utterance_alignment(sharp(path)).score <= 0.2
    assert utterance_alignment(soft(path, spread=2.0)).score <= 0.2


def test_early_guided_attention_still_passes_the_demos_criterion():
    # As the demo's guided-attention trial reads at epoch 7-8 (teacher-forced): it jumps
    # over the first word, then lags and ends a fifth short of the text, softly.
    early = torch.where(_t < 10, 0.0, 8 + (_t - 10) * (0.8 * TOKENS - 8) / (STEPS - 11))
    assert utterance_alignment(soft(early, spread=2.5)).score >= 0.25  # config/demo.yaml: 0.2


def test_reading_says_which_tokens_were_skipped_and_read_again():
    rereading = reading(sharp(REREAD_HALF_THEN_ALL))
    assert rereading.read.all() and not rereading.jumped.any()
    # The first half, up to the slack behind where the first pass turned back.
    assert rereading.reread.nonzero().flatten().tolist() == list(range(1, 16))
    skipping = reading(sharp(SKIP_A_THIRD))
    assert skipping.jumped.nonzero().flatten().tolist() == list(range(13, 26))
    assert not skipping.reread.any()


def test_a_short_excursion_is_not_a_reread_and_a_clean_diagonal_reads_all_once():
    clean = reading(sharp(DIAGONAL))
    assert clean.read.all() and not clean.reread.any() and not clean.rereading.any()
    # One or two stray steps (a start-up glance at the end of the text, a glitch midway).
    glitchy = DIAGONAL.clone()
    glitchy[:2], glitchy[100:102] = TOKENS - 1, 2.0
    assert utterance_alignment(sharp(glitchy)).score >= 0.9


def test_batch_metrics_ignore_padded_steps_and_tokens():
    ideal = sharp(DIAGONAL)
    padded = torch.zeros(2, STEPS + 30, TOKENS + 7)
    padded[0, :STEPS, :TOKENS] = ideal
    padded[0, STEPS:, TOKENS:] = 1.0 / 7  # garbage beyond the real lengths
    padded[1, :STEPS, :TOKENS] = WRONG_PATTERNS["uniform"]
    metrics = batch_alignment(padded, torch.tensor([TOKENS, TOKENS]),
                              torch.tensor([STEPS * 3 - 2, STEPS * 3]), n_frames_per_step=3)
    assert metrics[0].score == pytest.approx(1.0) and metrics[1].score == 0.0
    assert mean_alignment(metrics).score == pytest.approx(0.5)


# --- guided attention ------------------------------------------------------------------------

def test_guided_attention_mask_follows_each_utterances_own_lengths_and_zeroes_padding():
    r = 3
    mask = guided_attention_mask(torch.tensor([10, 4]), torch.tensor([60, 25]), r, sigma=0.2)
    assert mask.shape == (2, 20, 10)  # ceil(60 / 3) steps, 10 tokens
    steps_1 = 9  # ceil(25 / 3): the reduction factor rounds a partial step up
    assert torch.all(mask[1, steps_1:] == 0) and torch.all(mask[1, :, 4:] == 0)
    assert torch.all(mask[1, :steps_1, :4] >= 0) and mask[1, steps_1 - 1, 0] > 0.5
    # Zero on each utterance's own diagonal, rising away from it.
    assert mask[0, 0, 0] == 0 and mask[1, 0, 0] == 0
    assert mask[0, 10, 5] == pytest.approx(0.0) and mask[1, 0, 3] > mask[1, 0, 1]
    assert mask[0, 0, 9] > 0.9 and mask[0, 19, 0] > 0.9


def test_guided_attention_loss_is_low_on_the_diagonal_and_fades():
    hp = HParams(n_frames_per_step=1, guided_attention_weight=2.0,
                 guided_attention_fade_steps=100)
    criterion = Tacotron2Loss(hp)
    mel = torch.zeros(1, 4, STEPS)
    gate = torch.zeros(1, STEPS)
    lengths_in, lengths_out = torch.tensor([TOKENS]), torch.tensor([STEPS])

    def guided(weights: torch.Tensor, step: int = 0):
        output = Tacotron2Output(mel, mel, gate, weights.unsqueeze(0))
        return criterion(output, mel, gate, lengths_in, lengths_out, step)

    on_diagonal, reversed_ = guided(sharp(DIAGONAL)), guided(WRONG_PATTERNS["reversed diagonal"])
    assert on_diagonal.guided_attention < 0.01 < 0.5 < reversed_.guided_attention <= 1.0
    fading = guided(WRONG_PATTERNS["reversed diagonal"], step=75)
    torch.testing.assert_close(fading.total - fading.mel_and_gate,
                               0.5 * reversed_.guided_attention)  # weight 2 * (1 - 75/100)
    assert guided(WRONG_PATTERNS["reversed diagonal"], step=150).total == fading.mel_and_gate


def test_the_stop_gate_is_scored_once_per_decoder_step():
    # r = 3, 8 real frames: steps 0 and 1 go on, step 2 holds the last frame (and 1 padded).
    r = 3
    hp = HParams(n_frames_per_step=r, gate_pos_weight=1.0)
    gate_target = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 1, 1.0]])
    logits = torch.tensor([-9.0, -9.0, 9.0]).repeat_interleave(r).unsqueeze(0)
    mel = torch.zeros(1, 4, 9)
    output = Tacotron2Output(mel, mel, logits, torch.empty(0))
    terms = Tacotron2Loss(hp)(output, mel, gate_target, torch.tensor([5]), torch.tensor([8]))
    # A per-step logit that says "stop at the last step" is right: no frame-level conflict.
    assert terms.gate < 1e-3


# --- free-running stop metrics ------------------------------------------------------------------

def _batch(text_lengths: list[int], frames: list[int]) -> Batch:
    text = torch.full((len(text_lengths), max(text_lengths)), 0, dtype=torch.long)
    for b, n in enumerate(text_lengths):
        text[b, :n] = torch.arange(2, 2 + n)
    width = max(frames) + (-max(frames)) % 3
    return Batch(text, torch.tensor(text_lengths), torch.zeros(len(frames), 20, width),
                 torch.zeros(len(frames), width), torch.tensor(frames))


def _model_whose_gate_says(logit: float) -> Tacotron2:
    torch.manual_seed(0)
    model = Tacotron2(HParams(n_mel_channels=20, symbols_embedding_dim=16, encoder_embedding_dim=16,
                              attention_rnn_dim=16, decoder_rnn_dim=16, prenet_dim=8,
                              attention_dim=8, attention_location_n_filters=2,
                              postnet_embedding_dim=8, n_frames_per_step=3))
    torch.nn.init.zeros_(model.decoder.gate_layer.weight)
    torch.nn.init.constant_(model.decoder.gate_layer.bias, logit)
    return model


def test_a_model_that_never_stops_is_capped_at_a_small_multiple_of_the_reference():
    model = _model_whose_gate_says(-20.0)
    metrics = stop_metrics(model, _batch([6, 5], [30, 24]), n_utterances=2, gate_threshold=0.5)
    assert metrics.stop_rate == 0.0 and metrics.length_ratio == MAX_LENGTH_RATIO
    assert model.training  # left as it was found


def test_a_model_that_stops_at_once_has_a_short_length_ratio():
    model = _model_whose_gate_says(20.0)
    metrics = stop_metrics(model, _batch([6, 5, 4], [30, 24, 9]), n_utterances=2,
                           gate_threshold=0.5)
    assert metrics.stop_rate == 1.0
    assert metrics.length_ratio == pytest.approx((3 / 30 + 3 / 24) / 2)  # one step of 3 frames
