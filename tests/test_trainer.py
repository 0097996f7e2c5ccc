"""The trainer end to end: real tiny trainings on the generated corpus."""

import errno
import logging
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from tests.conftest import TEST_HPARAMS, hparams_arg
from tests.deadlines import scaled
from train.tacotron2.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.tacotron2.events import EXIT_DIVERGED, parse
from train.tacotron2.hparams import HParams
from train.tacotron2.model import Tacotron2
from train.tacotron2.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def run_train(corpus: Path, out: Path, mel_cache: Path, *extra: str,
              check: bool = True) -> tuple[list[dict], subprocess.CompletedProcess]:
    proc = subprocess.run(
        [sys.executable, "-m", "train", "--data", str(corpus), "--out", str(out),
         "--cache-dir", str(mel_cache), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=scaled(600))
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    events = [parse(line) for line in proc.stdout.splitlines()]
    assert all(events), "every stdout line is an event"
    return events, proc


def of_kind(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["event"] == kind]


@pytest.fixture(scope="module")
def trained(corpus, mel_cache, tmp_path_factory):
    """An 8-epoch run with end-of-run artifacts, shared by the tests below."""
    out = tmp_path_factory.mktemp("run")
    events, _ = run_train(corpus, out, mel_cache, "--hparams",
                          hparams_arg(epochs=8, artifacts="end", learning_rate=3e-3))
    return out, events


def test_validation_loss_falls_and_the_run_is_fully_reported(trained):
    out, events = trained
    assert events[0]["event"] == "start" and events[-1]["event"] == "end"
    assert events[0]["n_train"] + events[0]["n_val"] == 20
    validations = of_kind(events, "validation")
    assert [v["epoch"] for v in validations] == list(range(1, 9))
    losses = [v["val_loss"] for v in validations]
    assert losses[-1] < 0.6 * losses[0], losses
    for v in validations:
        assert 0 <= v["alignment_score"] <= 1 and 0 <= v["stop_rate"] <= 1
        assert 0 < v["length_ratio"] <= 2
        assert v["grad_norm"] > 0 and v["lr"] > 0 and v["seconds"] > 0
    assert events[-1]["status"] == "done"
    assert events[-1]["best_val_loss"] == pytest.approx(min(losses))
    assert {Path(e["path"]).name for e in of_kind(events, "checkpoint")} == {"last.pt", "best.pt"}
    assert load_checkpoint(out / "best.pt")["val_loss"] == pytest.approx(min(losses))
    kinds = {e["kind"]: Path(e["path"]) for e in of_kind(events, "artifact")}
    assert set(kinds) == {"alignment_plot", "mel_plot", "audio"}
    for path in kinds.values():
        assert path.is_file() and path.stat().st_size > 1000
    # The raw alignment beside its plot, for reports to redraw (decoder steps × tokens).
    assert np.load(kinds["alignment_plot"].with_suffix(".npy")).ndim == 2
    assert "epoch 8" in (out / "train.log").read_text()


def test_guided_attention_sharpens_the_attention_faster(trained, corpus, mel_cache, tmp_path):
    _, guided = trained  # the tiny profile's guided_attention_weight
    assert TEST_HPARAMS["guided_attention_weight"] > 0
    unguided, _ = run_train(corpus, tmp_path, mel_cache, "--hparams",
                            hparams_arg(epochs=8, learning_rate=3e-3, guided_attention_weight=0))
    # Eight tiny epochs read no sentence once through yet (coverage, hence the alignment
    # score, is 0 either way), but guided attention already looks where it should.
    with_ga = [v["attention_focus"] for v in of_kind(guided, "validation")]
    without = [v["attention_focus"] for v in of_kind(unguided, "validation")]
    assert with_ga[-1] > 2 * without[-1] and with_ga[-1] > with_ga[0], (with_ga, without)
    assert all(v["val_guided_attention_loss"] > 0 for v in of_kind(guided, "validation"))


def test_synthesize_writes_a_non_silent_wav(trained, tmp_path):
    out, _ = trained
    wav_path = tmp_path / "hello.wav"
    proc = subprocess.run([sys.executable, "-m", "train.synthesize", "--checkpoint",
                           str(out / "best.pt"), "--text", "Hello, world.", "--out",
                           str(wav_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=scaled(300))
    assert proc.returncode == 0, proc.stderr
    wav, rate = soundfile.read(wav_path)
    assert rate == 22050 and len(wav) > 0.1 * rate
    assert np.sqrt(np.mean(wav**2)) > 0.01


def test_synthesize_reports_how_each_held_out_sentence_ended(trained, corpus, tmp_path):
    out, _ = trained
    proc = subprocess.run([sys.executable, "-m", "train.synthesize", "--checkpoint",
                           str(out / "best.pt"), "--held-out", str(corpus), "--out",
                           str(tmp_path / "held_out")], cwd=ROOT, capture_output=True, text=True,
                          timeout=scaled(300))
    assert proc.returncode == 0, proc.stderr
    scores, *lines = proc.stdout.splitlines()
    # First what the model scored at its validation, as the trainer saved it.
    assert "best.pt: epoch " in scores and ", validation: val_loss " in scores
    assert "alignment_score " in scores and "stop_rate " in scores
    assert len(lines) == 3 and sorted(p.name for p in (tmp_path / "held_out").iterdir()) == [
        "HELD-0001.wav", "HELD-0002.wav", "HELD-0003.wav"]
    for line in lines:
        # An 8-epoch model rarely stops by itself; either way the line says which, and how
        # long it spoke against the corpus's own rendering.
        assert ("stopped by the gate after" in line or "cut off (the gate never fired)" in line)
        assert "(reference " in line and "ratio " in line and "alignment score " in line


def test_a_failure_while_writing_artifacts_never_fails_the_run(corpus, mel_cache, tmp_path,
                                                                monkeypatch, capsys):
    from train.tacotron2 import artifacts

    def refuse(*_args, **_kwargs):
        raise ValueError("Audio buffer is not finite everywhere")

    monkeypatch.setattr(artifacts, "write_audio_sample", refuse)
    hp = HParams.from_overrides({**TEST_HPARAMS, "epochs": 1, "artifacts": "end"})
    assert Trainer(hp, corpus, tmp_path, cache_dir=mel_cache).run() == 0
    events = [parse(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "end" and events[-1]["status"] == "done"


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(corpus, mel_cache,
                                                                      tmp_path):
    straight, _ = run_train(corpus, tmp_path / "straight", mel_cache,
                            "--hparams", hparams_arg(epochs=3))
    first, _ = run_train(corpus, tmp_path / "split", mel_cache,
                         "--hparams", hparams_arg(epochs=2))
    resumed, _ = run_train(corpus, tmp_path / "split", mel_cache,
                           "--resume", str(tmp_path / "split" / "last.pt"),
                           "--hparams", "epochs=3")
    start = resumed[0]
    assert start["resumed_from"].endswith("last.pt") and start["epoch"] == 2
    assert start["step"] == of_kind(first, "validation")[-1]["step"]
    (last,) = of_kind(resumed, "validation")
    expected = of_kind(straight, "validation")[-1]
    assert (last["epoch"], last["step"]) == (expected["epoch"], expected["step"])
    assert last["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-4)


@pytest.mark.parametrize("artifacts", ["end", "validation"])
def test_sigterm_saves_and_stops_within_seconds(corpus, mel_cache, tmp_path, artifacts):
    proc = subprocess.Popen(
        [sys.executable, "-m", "train", "--data", str(corpus), "--out", str(tmp_path),
         "--cache-dir", str(mel_cache), "--hparams", hparams_arg(epochs=200,
                                                                  artifacts=artifacts)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    events = []
    for line in proc.stdout:
        events.append(parse(line))
        if events[-1]["event"] == "validation":
            proc.send_signal(signal.SIGTERM)
            break
    events += [parse(line) for line in proc.stdout]
    assert proc.wait(timeout=scaled(20)) == 0
    end = events[-1]
    assert end["event"] == "end" and end["status"] == "stopped" and "SIGTERM" in end["reason"]
    assert end["epoch"] < 200
    assert load_checkpoint(tmp_path / "last.pt")["step"] == end["step"]
    # Nothing is drawn or spoken between the signal and the exit.
    after_signal = events[[e["event"] for e in events].index("validation") + 1:]
    assert "artifact" not in {e["event"] for e in after_signal}


def test_render_draws_a_stopped_runs_plots_from_its_checkpoint(trained, corpus, mel_cache,
                                                             tmp_path):
    out, _ = trained
    proc = subprocess.run([sys.executable, "-m", "train.render", "--checkpoint",
                           str(out / "best.pt"), "--data", str(corpus), "--cache-dir",
                           str(mel_cache), "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=scaled(300))
    assert proc.returncode == 0, proc.stderr
    events = [parse(line) for line in proc.stdout.splitlines()]
    epoch = load_checkpoint(out / "best.pt")["epoch"]
    assert {e["kind"]: Path(e["path"]).name for e in events} == {
        "alignment_plot": f"alignment_e{epoch:04d}.png", "mel_plot": f"mel_e{epoch:04d}.png",
        "audio": f"sample_e{epoch:04d}.wav"}
    assert all(Path(e["path"]).stat().st_size > 0 for e in events)


def test_non_finite_loss_ends_the_run_as_diverged(corpus, mel_cache, tmp_path, monkeypatch,
                                                  capsys):
    from train.tacotron2 import trainer as trainer_module

    real_forward = trainer_module.Tacotron2Loss.forward
    calls = {"n": 0}

    def poisoned(self, *args):
        calls["n"] += 1
        terms = real_forward(self, *args)
        poison = math.nan if calls["n"] == 3 else 1.0  # the first validation's loss
        return terms._replace(total=terms.total * poison, mel=terms.mel * poison)

    monkeypatch.setattr(trainer_module.Tacotron2Loss, "forward", poisoned)
    hp = HParams.from_overrides({**TEST_HPARAMS, "epochs": 5})
    code = Trainer(hp, corpus, tmp_path, cache_dir=mel_cache).run()
    events = [parse(line) for line in capsys.readouterr().out.splitlines()]
    assert code == EXIT_DIVERGED
    assert events[-1]["status"] == "diverged" and "nan" in events[-1]["reason"]
    assert events[-1]["step"] == 2


def test_bad_input_gets_a_clear_error(corpus, mel_cache, tmp_path):
    _, proc = run_train(corpus, tmp_path / "a", mel_cache, "--hparams", "batchsize=4",
                        check=False)
    assert proc.returncode == 2 and "did you mean batch_size?" in proc.stderr

    broken = tmp_path / "broken"
    (broken / "wavs").mkdir(parents=True)
    (broken / "metadata.csv").write_text("A|One.|one.\nB|Two.|two.\nC|Three.|three.\n")
    for name in "ABC":
        (broken / "wavs" / f"{name}.wav").write_bytes(
            (corpus / "wavs" / "DEMO-0001.wav").read_bytes())
    (broken / "wavs" / "B.wav").write_bytes(b"")
    _, proc = run_train(broken, tmp_path / "b", mel_cache, "--hparams", hparams_arg(),
                        check=False)
    assert proc.returncode == 1 and "B.wav" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "b" / "last.pt")


def test_a_vanished_event_reader_does_not_break_a_graceful_stop(corpus, mel_cache, tmp_path):
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "train", "--data", str(corpus), "--out", str(tmp_path),
         "--cache-dir", str(mel_cache), "--hparams", hparams_arg(epochs=200)],
        cwd=ROOT, stdout=write_end, stderr=subprocess.DEVNULL)
    os.close(write_end)
    with os.fdopen(read_end) as events:
        for line in events:
            if parse(line)["event"] == "validation":
                break
    proc.send_signal(signal.SIGTERM)  # the reader has closed its end of the pipe
    assert proc.wait(timeout=scaled(20)) == 0
    assert "stopped: signal SIGTERM" in (tmp_path / "train.log").read_text()
    assert load_checkpoint(tmp_path / "last.pt")["step"] > 0


@pytest.mark.parametrize(("every", "steps"), [(3, [3, 4]), (2, [2, 4])])
def test_validation_every_n_steps_ends_with_one_and_never_reports_an_empty_mean(
        corpus, mel_cache, tmp_path, every, steps):
    events, _ = run_train(corpus, tmp_path, mel_cache, "--hparams",
                          hparams_arg(epochs=2, val_every_steps=every))
    validations = of_kind(events, "validation")
    assert [v["step"] for v in validations] == steps  # 16 clips, batches of 8: 2 per epoch
    assert all(math.isfinite(v["train_loss"]) for v in validations)


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(corpus, mel_cache, tmp_path):
    run_train(corpus, tmp_path, mel_cache, "--hparams", hparams_arg(epochs=2))
    last, previous = tmp_path / "last.pt", tmp_path / "last.prev.pt"
    assert load_checkpoint(previous)["epoch"] == 1 and load_checkpoint(last)["epoch"] == 2
    last.write_bytes(last.read_bytes()[:1000])  # a copy cut short

    events, proc = run_train(corpus, tmp_path, mel_cache, "--resume", str(last),
                             "--hparams", "epochs=3")
    assert events[0]["resumed_from"] == str(previous) and events[0]["epoch"] == 1
    assert [v["epoch"] for v in of_kind(events, "validation")] == [2, 3]
    assert "last.pt: unreadable checkpoint" in proc.stderr


def test_no_usable_checkpoint_is_an_error_naming_it_not_a_fresh_start(corpus, mel_cache,
                                                                       tmp_path):
    run_train(corpus, tmp_path, mel_cache, "--hparams", hparams_arg(epochs=2))
    for name in ("last.pt", "last.prev.pt"):
        (tmp_path / name).write_bytes(b"not a checkpoint")
    events, proc = run_train(corpus, tmp_path, mel_cache, "--resume",
                             str(tmp_path / "last.pt"), check=False)
    assert proc.returncode == 2 and not events
    assert f"{tmp_path / 'last.pt'}: unreadable checkpoint" in proc.stderr
    assert "the previous one too" in proc.stderr


def run_in_process(hp: HParams, corpus: Path, out: Path, mel_cache: Path, capsys,
                   resume: Path | None = None) -> list[dict]:
    """Train in this process (no signal handlers); the events it emitted."""
    Trainer(hp, corpus, out, cache_dir=mel_cache, resume=resume).run()
    return [parse(line) for line in capsys.readouterr().out.splitlines()]


def test_a_run_stopped_mid_epoch_resumes_at_the_next_batch(corpus, mel_cache, tmp_path,
                                                           monkeypatch, capsys):
    monkeypatch.setattr(Trainer, "_install_signal_handlers", lambda self: None)
    hp = HParams.from_overrides({**TEST_HPARAMS, "epochs": 2})  # 2 batches per epoch
    (straight,) = of_kind(run_in_process(hp, corpus, tmp_path / "straight", mel_cache,
                                         capsys), "validation")[-1:]

    real_step = Trainer.train_step

    def stopped_after_step_3(self, batch):
        real_step(self, batch)
        if self.step == 3:  # the first batch of epoch 2
            self._stop_signal = signal.SIGTERM

    monkeypatch.setattr(Trainer, "train_step", stopped_after_step_3)
    events = run_in_process(hp, corpus, tmp_path / "split", mel_cache, capsys)
    assert events[-1]["status"] == "stopped" and events[-1]["step"] == 3
    monkeypatch.setattr(Trainer, "train_step", real_step)
    events = run_in_process(hp, corpus, tmp_path / "split", mel_cache, capsys,
                            resume=tmp_path / "split" / "last.pt")
    (resumed,) = of_kind(events, "validation")
    # The optimiser stepped 4 times in all, as in the uninterrupted run, not 5.
    assert (resumed["epoch"], resumed["step"]) == (straight["epoch"], straight["step"]) == (2, 4)
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], rel=1e-4)
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-4)


def test_after_a_fallback_the_next_save_keeps_the_good_previous_checkpoint(
        corpus, mel_cache, tmp_path):
    run_train(corpus, tmp_path, mel_cache, "--hparams", hparams_arg(epochs=2))
    last, previous = tmp_path / "last.pt", tmp_path / "last.prev.pt"
    last.write_bytes(last.read_bytes()[:1000])  # a copy cut short
    events, _ = run_train(corpus, tmp_path, mel_cache, "--resume", str(last),
                          "--hparams", "epochs=2")
    assert events[0]["resumed_from"] == str(previous)
    # Epoch 2 was trained again and saved: last.pt is good, and so is its fallback.
    assert load_checkpoint(last)["epoch"] == 2
    assert load_checkpoint(previous)["epoch"] == 1
    assert (tmp_path / "last.damaged.pt").stat().st_size == 1000


def test_changing_a_model_size_on_resume_is_one_line_naming_it(corpus, mel_cache, tmp_path):
    run_train(corpus, tmp_path, mel_cache, "--hparams", hparams_arg(epochs=1))
    _, proc = run_train(corpus, tmp_path, mel_cache, "--resume", str(tmp_path / "last.pt"),
                        "--hparams", "epochs=2,encoder_embedding_dim=64,learning_rate=1e-4",
                        check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    # The last line, as the tuner reports it; the log (train.log) has it with its time.
    line = proc.stderr.splitlines()[-1]
    assert line.startswith(f"error: {tmp_path / 'last.pt'}: a resumed run cannot change the "
                           "model's size: encoder_embedding_dim (checkpoint 32, now 64)")
    assert "ERROR train: " in (tmp_path / "train.log").read_text().splitlines()[-1]
    assert "learning_rate" not in line


def test_a_full_disk_is_named_with_the_file_it_could_not_write(corpus, mel_cache, tmp_path,
                                                              monkeypatch):
    from train.tacotron2 import checkpoint

    real_save = torch.save

    def save_on_a_full_disk(state, file):
        with open("/dev/full", "wb") as full:  # every write: ENOSPC
            real_save(state, full)

    monkeypatch.setattr(checkpoint.torch, "save", save_on_a_full_disk)
    with pytest.raises(CheckpointError) as error:
        checkpoint.save_checkpoint(tmp_path / "last.pt", {"model": torch.zeros(100_000)})
    assert str(error.value) == (f"{tmp_path / 'last.pt'}: cannot write the checkpoint: "
                                f"the disk is full ({tmp_path} has no space left)")
    assert list(tmp_path.iterdir()) == []


def train_main(corpus: Path, out: Path, cache: Path, capsys, *extra: str) -> tuple[int, list[str]]:
    """``python -m train``'s main() in this process: its exit code and its stderr lines."""
    from train.__main__ import main

    capsys.readouterr()
    code = main(["--data", str(corpus), "--out", str(out), "--cache-dir", str(cache),
                 "--hparams", hparams_arg(epochs=1), *extra])
    return code, capsys.readouterr().err.splitlines()


def test_a_full_disk_under_the_mel_cache_ends_the_run_in_one_line_naming_the_file(
        corpus, tmp_path, monkeypatch, capsys, restore_logging):
    from train.tacotron2 import data

    def save_on_a_full_disk(path, array):
        with open("/dev/full", "wb") as full:  # every write: ENOSPC
            np.save(full, array)

    monkeypatch.setattr(data, "_save_npy_atomically", save_on_a_full_disk)
    monkeypatch.setattr(Trainer, "_install_signal_handlers", lambda self: None)
    out, cache = tmp_path / "run", tmp_path / "mel_cache"
    out.mkdir()
    (out / "train.log").symlink_to("/dev/full")  # the log is on the full disk too
    code, err = train_main(corpus, out, cache, capsys)
    assert code == 1
    assert err[-1].startswith(f"error: cannot write the mel cache file {cache}{os.sep}DEMO-")
    assert err[-1].endswith(".npy: No space left on device")
    assert "Traceback" not in "\n".join(err) and "Logging error" not in "\n".join(err)
    # The log file's own failure is said once, before.
    assert [line for line in err if "train.log" in line] == [
        f"warning: cannot write the log file {out / 'train.log'}: No space left on device; "
        "logging to stderr only"]


def test_any_os_error_while_training_ends_with_one_line_naming_the_file(
        corpus, mel_cache, tmp_path, monkeypatch, capsys, restore_logging):
    unwritable = tmp_path / "elsewhere" / "file"

    def refuse(self, *_args, **_kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(unwritable))

    monkeypatch.setattr(Trainer, "_validate_and_checkpoint", refuse)
    monkeypatch.setattr(Trainer, "_install_signal_handlers", lambda self: None)
    code, err = train_main(corpus, tmp_path / "run", mel_cache, capsys, "--no-log-file")
    assert code == 1 and "Traceback" not in "\n".join(err)
    assert err[-1] == f"error: {unwritable}: Permission denied"
    # train.log keeps it too, with its time.
    code, err = train_main(corpus, tmp_path / "run", mel_cache, capsys)
    assert err[-1] == f"error: {unwritable}: Permission denied"
    assert (tmp_path / "run" / "train.log").read_text().splitlines()[-1].endswith(
        f"ERROR train: {unwritable}: Permission denied")


def test_a_loss_grown_past_max_loss_growth_ends_the_run_as_diverged(corpus, mel_cache,
                                                                     tmp_path, capsys):
    # A learning rate of 10 blows the loss up at once (~50 to ~6e4 at the second step)
    # without making it NaN: the run must not "complete".
    assert HParams().max_loss_growth == 100
    hp = HParams.from_overrides({**TEST_HPARAMS, "epochs": 1, "learning_rate": 10.0,
                                 "free_running_utterances": 0})
    code = Trainer(hp, corpus, tmp_path, cache_dir=mel_cache).run()
    end = [parse(line) for line in capsys.readouterr().out.splitlines()][-1]
    assert code == EXIT_DIVERGED
    assert end["event"] == "end" and end["status"] == "diverged", end
    found = re.fullmatch(r"train loss is (\S+) at step 2, over 100 times the first step's "
                         r"(\S+) \(max_loss_growth\)", end["reason"])
    assert found and float(found[1]) > 100 * float(found[2]), end["reason"]
    assert end["step"] == 1 and not (tmp_path / "best.pt").exists()


def test_a_diverged_models_plots_are_drawn_and_its_audio_skipped_in_one_line(
        corpus, mel_cache, tmp_path, capsys, caplog):
    from train.render import main

    hp = HParams.from_overrides(TEST_HPARAMS)
    model = Tacotron2(hp)
    with torch.no_grad():  # log-mels of 1000: finite, but exp() of them is not
        model.decoder.frame_projection.bias.fill_(1000.0)
    save_checkpoint(tmp_path / "best.pt", {
        "model": model.state_dict(), "optimizer": {}, "scheduler": {}, "epoch": 3, "step": 6,
        "hparams": hp.to_dict()})
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert main(["--checkpoint", str(tmp_path / "best.pt"), "--data", str(corpus),
                     "--cache-dir", str(mel_cache)]) == 0
    events = [parse(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(e["kind"] for e in events) == ["alignment_plot", "mel_plot"]
    assert not (tmp_path / "artifacts" / "sample_e0003.wav").exists()
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING
                  and "audio" in r.getMessage()]
    assert warning.getMessage().startswith("no audio sample of epoch 3: the predicted mel "
                                           "spectrogram is not finite or too large for audio")
    assert warning.exc_info is None and "\n" not in warning.getMessage()
