import torch

from train.alignment import focus_score, gate_accuracy


def test_focus_score_is_one_for_a_sharp_diagonal_and_low_for_uniform_attention():
    steps, tokens = 12, 6
    sharp = torch.zeros(1, steps, tokens)
    for step in range(steps):
        sharp[0, step, step * tokens // steps] = 1.0
    lengths_in, lengths_out = torch.tensor([tokens]), torch.tensor([steps])
    assert focus_score(sharp, lengths_in, lengths_out, 1) == 1.0
    uniform = torch.full((1, steps, tokens), 1 / tokens)
    assert abs(focus_score(uniform, lengths_in, lengths_out, 1) - 1 / tokens) < 1e-6


def test_focus_score_ignores_padding_and_counts_skipped_tokens():
    alignments = torch.zeros(2, 4, 5)
    alignments[0, :, 0] = 1.0  # utterance 0 (4 tokens) attends only to its first token
    alignments[1, :2, 0] = 1.0  # utterance 1 (2 tokens, 2 real steps) aligns perfectly
    alignments[1, :2, 1] = 0.0
    alignments[1, 1, 0], alignments[1, 1, 1] = 0.0, 1.0
    alignments[1, 2:, 4] = 1.0  # padded steps and tokens must not count
    score = focus_score(alignments, torch.tensor([4, 2]), torch.tensor([12, 6]), 3)
    assert abs(score - (1 + 0 + 0 + 0 + 1 + 1) / 6) < 1e-6


def test_gate_accuracy_counts_real_frames_only():
    logits = torch.tensor([[-5.0, -5.0, 5.0, 5.0], [5.0, 5.0, -5.0, -5.0]])
    targets = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]])
    lengths = torch.tensor([3, 2])  # second utterance: frame 0 says stop too early
    assert abs(gate_accuracy(logits, targets, lengths) - 4 / 5) < 1e-6
