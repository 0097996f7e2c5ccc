"""Skipped and repeated words found in constructed free-running attention."""

from __future__ import annotations

import torch

from train.tacotron2.robustness import utterance_robustness, words
from train.tacotron2.text import text_to_sequence

TEXT = "Anna bought red apples, green pears and ripe plums."


def attention(tokens: list[int], n_tokens: int, steps_per_token: int = 3) -> torch.Tensor:
    """Sharp attention that dwells ``steps_per_token`` steps on each of ``tokens`` in turn."""
    path = torch.tensor(tokens).repeat_interleave(steps_per_token)
    return torch.nn.functional.one_hot(path, n_tokens).float()


def span(word: str) -> list[int]:
    found = next(w for w in words(TEXT, "project") if w.text == word)
    return list(range(found.first, found.last + 1))


N = len(text_to_sequence(TEXT, "project"))


def test_words_map_to_their_tokens():
    assert [w.text for w in words(TEXT, "project")] == [
        "anna", "bought", "red", "apples", "green", "pears", "and", "ripe", "plums"]
    assert text_to_sequence(TEXT, "project")[span("red")[0]] == text_to_sequence("r", "project")[0]


def test_a_clean_reading_has_no_skips_or_repeats():
    assert utterance_robustness(attention(list(range(N)), N), TEXT, "project").clean


def test_a_skip_names_the_words_jumped_over():
    jumped = set(span("green")) | set(span("pears")) | {span("pears")[-1] + 1}
    result = utterance_robustness(attention([t for t in range(N) if t not in jumped], N),
                                  TEXT, "project")
    assert result.skipped == ["green pears"] and result.repeated == []


def test_stopping_early_skips_the_end_and_speaking_nothing_skips_it_all():
    early = utterance_robustness(attention(list(range(span("ripe")[0] - 1)), N), TEXT, "project")
    assert early.skipped == ["ripe plums"]
    silent = utterance_robustness(torch.zeros(0, N), TEXT, "project")
    assert silent.skipped == [" ".join(w.text for w in words(TEXT, "project"))]


def test_going_back_to_read_again_names_the_repeated_words():
    back_to_red = list(range(span("pears")[-1] + 1)) + list(range(span("red")[0], N))
    result = utterance_robustness(attention(back_to_red, N), TEXT, "project")
    assert result.repeated == ["red apples green pears"] and result.skipped == []
