"""``python -m train.evaluate`` on a generated corpus with an untrained tiny checkpoint, and
its copy synthesis of the recordings (``--references``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TEST_HPARAMS
from train.corpus import HARD_SENTENCES, HELD_OUT, generate_corpus
from train.evaluate import main
from train.tacotron2.checkpoint import save_checkpoint
from train.tacotron2.hparams import HParams
from train.tacotron2.model import Tacotron2


@pytest.fixture(scope="module")
def corpus_and_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("evaluate")
    corpus = generate_corpus(folder / "corpus", 1)
    hp = HParams.from_overrides({**TEST_HPARAMS, "vocoder": "griffin_lim"})
    checkpoint = save_checkpoint(folder / "best.pt", {
        "model": Tacotron2(hp).state_dict(), "hparams": hp.to_dict(), "epoch": 1, "step": 1,
        "optimizer": {}, "scheduler": {}})
    return corpus, checkpoint


def test_each_sentence_gets_a_line_and_the_run_a_summary(corpus_and_checkpoint, capsys):
    corpus, checkpoint = corpus_and_checkpoint
    assert main(["--checkpoint", str(checkpoint), "--held-out", str(corpus)]) == 0
    lines = capsys.readouterr().out.splitlines()
    sentences = [line for line in lines if line.startswith(("HELD-", "HARD-"))]
    assert len(sentences) == HELD_OUT + len(HARD_SENTENCES)
    for line in sentences:
        assert "length " in line and "CER " in line and "MCD " in line and "skipped " in line
    summary = next(line for line in lines if line.startswith("summary: "))
    assert f"{len(sentences)} sentences, gate stopped " in summary and "ratio " in summary
    assert lines[-1].startswith("CPU s per sentence: synthesis ")


def test_references_check_the_vocoder_on_the_recordings(corpus_and_checkpoint, capsys):
    corpus, checkpoint = corpus_and_checkpoint
    assert main(["--checkpoint", str(checkpoint), "--held-out", str(corpus), "--references",
                 "--recognizer", "off"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("copy synthesis of the recordings, through griffin_lim:")
    summary = next(line for line in out.splitlines() if line.startswith("summary: "))
    assert "gate" not in summary and "CER" not in summary and "length 1.00" in summary


def test_without_a_checkpoint_it_needs_references(corpus_and_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--held-out", str(corpus_and_checkpoint[0])])
    assert exit_info.value.code == 2
    assert "--checkpoint is needed" in capsys.readouterr().err
